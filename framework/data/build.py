"""Data loaders: dataset dicts + a mapper -> batches (lists of mapped dicts) for training and testing.

Reproducibility: the training loader gives every item of its sample stream its own seed, derived
from the loader's ``seed`` and the item's position in the global stream, and seeds Python's
``random``, numpy's and torch's global generators with it just while that item is mapped. The
batches therefore depend only on ``seed`` (and ``start_iter``), not on ``num_workers`` nor on which
worker mapped which item; a resumed run (``start_iter``) maps each later item exactly as the
uninterrupted run did.

Bad images (``bad_data="skip"``): both loaders' datasets return
:class:`~framework.data.skipping.LoadedItem` s, so the images they replaced (training) or left out
(test) travel beside the mapped dicts, never inside them (see :mod:`framework.data.skipping`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from framework.errors import ConfigError, did_you_mean
from framework.registry import config_section
from framework.utils import comm
from framework.utils.seeding import derive_seed, seed_global_rngs

from .detection_utils import image_size
from .samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingBatchSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from .skipping import BAD_IMAGE_ERRORS, LoadedBatch, LoadedItem, SkippedImage, collate_loaded

__all__ = [
    "MapDataset",
    "DatasetMappingError",
    "InferenceLoader",
    "build_train_loader",
    "build_test_loader",
    "worker_init_fn",
]

logger = logging.getLogger(__name__)

TRAIN_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler")


class DatasetMappingError(RuntimeError):
    """The mapper failed on one dataset item; the message names the item's file and the cause."""


class MapDataset(Dataset):
    """``dataset_list[i]`` mapped by ``mapper``, computed when item i is read.

    Args:
        dataset_list: dataset dicts.
        mapper: dict -> model input dict (e.g. :class:`framework.data.mapper.DatasetMapper`).
        serialize: store the dicts as one pickled byte buffer instead of Python objects. Forked
            DataLoader workers otherwise duplicate the whole list in memory as reference counts
            are touched (detectron2 does the same).

    A failing mapper raises (never silently skips the item): errors that do not already name the
    image file are re-raised as :class:`DatasetMappingError` naming it.
    """

    def __init__(self, dataset_list: Sequence[dict[str, Any]], mapper: Callable[[dict], Any], *, serialize: bool = True) -> None:
        if not callable(mapper):
            raise TypeError(f"MapDataset: mapper must be callable, got {mapper!r}")
        self.mapper = mapper
        self._serialized = serialize
        if serialize:
            blobs = [np.frombuffer(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for d in dataset_list]
            self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
            self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
        else:
            self._list = list(dataset_list)

    def __len__(self) -> int:
        return len(self._ends) if self._serialized else len(self._list)

    def raw(self, idx: int) -> dict[str, Any]:
        """The unmapped dataset dict ``idx`` (a fresh copy when serialized)."""
        if not self._serialized:
            return self._list[idx]
        if not -len(self) <= idx < len(self):
            raise IndexError(f"MapDataset index {idx} out of range for {len(self)} items")
        idx %= len(self)
        start = 0 if idx == 0 else int(self._ends[idx - 1])
        return pickle.loads(self._buffer[start:int(self._ends[idx])].tobytes())

    def __getitem__(self, idx: int) -> Any:
        d = self.raw(idx)
        file_name = d.get("file_name") if isinstance(d, dict) else None
        try:
            out = self.mapper(d)
        except Exception as e:
            if file_name is not None and str(file_name) in str(e):
                raise
            raise DatasetMappingError(f"mapping dataset item {idx} (file {file_name}, image_id="
                                      f"{d.get('image_id') if isinstance(d, dict) else None}) failed: "
                                      f"{type(e).__name__}: {e}") from e
        if out is None:
            raise DatasetMappingError(f"the mapper {self.mapper!r} returned None for dataset item {idx} (file {file_name}); "
                                      "a mapper must return a dict (filter the dataset dicts beforehand instead)")
        return out


# ---------------------------------------------------------------------- seeding
@contextlib.contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global generators; restore their states on exit.

    Restoring keeps the caller's random streams untouched when mapping runs in the main process
    (``num_workers=0``).
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_global_rngs(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def worker_init_fn(worker_id: int, *, seed: int, rank: int = 0) -> None:
    """Seed a DataLoader worker's global generators from (``seed``, ``rank``, ``worker_id``).

    Use with ``functools.partial(worker_init_fn, seed=..., rank=...)``. The training loader also
    seeds every item on its own (see the module docstring); this covers anything else in the
    worker that draws random numbers.
    """
    seed_global_rngs(derive_seed(seed, rank, worker_id))


#: How many other images a skipping loader tries before it gives up on a sample.
_MAX_REPLACEMENTS = 10


class _SeededMapDataset(Dataset):
    """Maps item ``(position, index)`` with the global generators seeded from (seed, position).

    Returns a :class:`~framework.data.skipping.LoadedItem`. With ``skip_bad_images``, an image that
    cannot be read is replaced by the next dataset index (deterministically, so resuming stays
    exact) and listed in the item's ``skipped``, for the loader to count.
    """

    def __init__(self, dataset: MapDataset, seed: int, *, skip_bad_images: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.skip_bad_images = skip_bad_images

    def __getitem__(self, key: tuple[int, int]) -> LoadedItem:
        position, index = key
        skipped: list[SkippedImage] = []
        with _seeded_global_rngs(derive_seed(self.seed, position)):
            for attempt in range(min(_MAX_REPLACEMENTS + 1, len(self.dataset))):
                candidate = (index + attempt) % len(self.dataset)
                try:
                    out = self.dataset[candidate]
                except BAD_IMAGE_ERRORS as e:
                    if not self.skip_bad_images:
                        raise
                    skipped.append(SkippedImage.from_error(self.dataset.raw(candidate), e))
                    continue
                return LoadedItem(mapped=out, skipped=tuple(skipped))
        raise DatasetMappingError(f"{len(skipped)} images in a row could not be read (bad_data=skip replaces an "
                                  f"unreadable image by the next one, trying up to {_MAX_REPLACEMENTS}); the first: "
                                  f"{skipped[0].reason}")


class _SkipCountingLoader:
    """Iterates the DataLoader's :class:`~framework.data.skipping.LoadedBatch` es and yields their
    ``inputs``; logs and counts the images the workers replaced, and puts the counts in the event
    storage (``data/skipped_images``; ``data/dropped/<reason>`` from loading)."""

    def __init__(self, loader: DataLoader, dropped_at_load: dict[str, int]) -> None:
        self.loader = loader
        self.dropped_at_load = dropped_at_load
        self.num_skipped = 0

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        from framework.utils.events import put_scalars

        put_scalars(**{f"data/dropped/{k}": float(v) for k, v in self.dropped_at_load.items()},
                    **{"data/skipped_images": float(self.num_skipped)}, smoothing_hint=False)
        batch: LoadedBatch
        for batch in self.loader:
            if batch.skipped:
                self.num_skipped += len(batch.skipped)
                for image in batch.skipped:
                    logger.warning("bad_data=skip: replaced an unreadable training image (%d so far): %s",
                                   self.num_skipped, image.reason)
                put_scalars(**{"data/skipped_images": float(self.num_skipped)}, smoothing_hint=False)
            yield batch.inputs


class _InferenceDataset(Dataset):
    """Item ``i`` of ``dataset`` as a :class:`~framework.data.skipping.LoadedItem`; with
    ``skip_bad_images``, an image that cannot be read gives an item without a mapped dict that
    names it (a test set has no replacement for it: every image is evaluated once)."""

    def __init__(self, dataset: MapDataset, *, skip_bad_images: bool) -> None:
        self.dataset = dataset
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> LoadedItem:
        try:
            return LoadedItem(mapped=self.dataset[idx])
        except BAD_IMAGE_ERRORS as e:
            if not self.skip_bad_images:
                raise
            return LoadedItem(mapped=None, skipped=(SkippedImage.from_error(self.dataset.raw(idx), e),))


class InferenceLoader:
    """One pass over this rank's shard of a test set, as lists of mapped dicts (what
    :func:`build_test_loader` returns).

    Under ``bad_data="skip"`` an image that cannot be read is left out of its batch (a batch left
    empty is not yielded), logged with a warning that names the file, and listed by
    :meth:`skipped_images` (this implements :class:`~framework.data.skipping.ReportsSkippedImages`).

    Args:
        loader: a DataLoader over an ``_InferenceDataset`` collated by
            :func:`~framework.data.skipping.collate_loaded`.
        skip_bad_images: whether the dataset leaves unreadable images out (else they raise).
    """

    def __init__(self, loader: DataLoader, *, skip_bad_images: bool) -> None:
        self.loader = loader
        self.skip_bad_images = skip_bad_images
        self._skipped: list[SkippedImage] = []

    def __len__(self) -> int:
        """Batches of the pass; fewer are yielded when a whole batch is left out."""
        return len(self.loader)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        self._skipped = []
        batch: LoadedBatch
        for batch in self.loader:
            for image in batch.skipped:
                self._skipped.append(image)
                logger.warning("bad_data=skip: left an unreadable test image out of the evaluation (%d so far on "
                               "this process): %s", len(self._skipped), image.reason)
            if batch.inputs:
                yield batch.inputs

    def skipped_images(self) -> Optional[list[SkippedImage]]:
        """The images the latest pass left out, in dataset order; ``None`` under ``bad_data="strict"``."""
        return list(self._skipped) if self.skip_bad_images else None


# ---------------------------------------------------------------------- loaders
@config_section("train_loader")
def build_train_loader(
    dataset_dicts: Sequence[dict[str, Any]],
    mapper: Callable[[dict], dict],
    *,
    total_batch_size: int,
    num_workers: int = 2,
    sampler: Literal["TrainingSampler", "RepeatFactorTrainingSampler"] = "TrainingSampler",
    repeat_thresh: float = 0.0,
    aspect_ratio_grouping: bool = True,
    seed: Optional[int] = None,
    start_iter: int = 0,
    bad_data: Literal["skip", "strict"] = "skip",
) -> Iterable[list[dict[str, Any]]]:
    """Infinite training batches of mapped dicts for this rank.

    Args:
        dataset_dicts: the training set (dataset dicts).
        mapper: dict -> model input dict (e.g. ``DatasetMapper(is_train=True)``).
        total_batch_size: images per iteration over all ranks; each rank gets
            ``total_batch_size / world_size`` (must divide evenly).
        num_workers: DataLoader worker processes (0: map in this process).
        sampler: ``TrainingSampler`` (uniform) or ``RepeatFactorTrainingSampler`` (LVIS-style
            oversampling of images with rare categories, see ``repeat_thresh``).
        repeat_thresh: the ``t`` of :func:`repeat_factors_from_category_frequency`.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        seed: seed of the sample order and of the augmentations; None draws one shared by all
            ranks (not reproducible).
        start_iter: the iteration to resume from: the loader yields batch ``start_iter`` of the
            uninterrupted run first, with or without aspect-ratio grouping (the grouping is
            replayed at the index level, see :class:`TrainingBatchSampler`).
        bad_data: ``"skip"``: an image that cannot be read (missing, truncated, not an image, or
            of another size than its dict says) is replaced by another one and counted
            (``data/skipped_images`` in the event storage, a warning naming the file);
            ``"strict"``: it stops the run (check the images beforehand with
            :func:`framework.data.coco.check_images`, as the main job does under strict).

    Returns:
        an iterable whose iterator yields lists of ``total_batch_size / world_size`` mapped dicts
        forever (a new iterator restarts the stream at ``start_iter``).
    """
    if len(dataset_dicts) == 0:
        raise ValueError("build_train_loader got an empty dataset (no dataset dicts)")
    world_size = comm.get_world_size()
    if not isinstance(total_batch_size, int) or total_batch_size <= 0 or total_batch_size % world_size:
        raise ConfigError(f"total_batch_size ({total_batch_size!r}) must be a positive multiple of the number of "
                          f"processes ({world_size})")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if start_iter < 0:
        raise ConfigError(f"start_iter must be >= 0, got {start_iter}")
    batch_size = total_batch_size // world_size
    seed = int(comm.shared_random_seed() if seed is None else seed)

    if sampler == "TrainingSampler":
        if repeat_thresh > 0:
            logger.warning("repeat_thresh=%g is ignored by the TrainingSampler; use sampler="
                           "'RepeatFactorTrainingSampler' to oversample rare categories", repeat_thresh)
        index_sampler: TrainingSampler | RepeatFactorTrainingSampler = TrainingSampler(len(dataset_dicts), seed=seed)
    elif sampler == "RepeatFactorTrainingSampler":
        factors = repeat_factors_from_category_frequency(dataset_dicts, repeat_thresh)
        logger.info("RepeatFactorTrainingSampler: %d images -> %.1f expected samples per epoch (repeat_thresh=%g)",
                    len(factors), float(factors.sum()), repeat_thresh)
        index_sampler = RepeatFactorTrainingSampler(factors, seed=seed)
    else:
        raise ConfigError(f"unknown training sampler {sampler!r}.{did_you_mean(str(sampler), TRAIN_SAMPLERS)} "
                          f"Valid: {list(TRAIN_SAMPLERS)}")
    _check_bad_data(bad_data)
    batches = TrainingBatchSampler(index_sampler, batch_size, start_batch=start_iter,
                                   landscape=_landscape_flags(dataset_dicts) if aspect_ratio_grouping else None)
    loader = DataLoader(
        _SeededMapDataset(MapDataset(dataset_dicts, mapper), seed, skip_bad_images=bad_data == "skip"),
        batch_sampler=batches,
        collate_fn=collate_loaded,
        num_workers=num_workers,
        worker_init_fn=functools.partial(worker_init_fn, seed=seed, rank=comm.get_rank()),
        # The loader draws its workers' base seed from this, not from the global torch generator.
        generator=torch.Generator().manual_seed(seed),
    )
    return _SkipCountingLoader(loader, dict(getattr(dataset_dicts, "dropped", {})))


def _check_bad_data(bad_data: str) -> None:
    if bad_data not in ("skip", "strict"):
        raise ConfigError(f"bad_data must be 'skip' or 'strict', got {bad_data!r}")


def _landscape_flags(dataset_dicts: Sequence[dict[str, Any]]) -> list[bool]:
    """w > h per dataset dict, from its ``width``/``height`` (the original size, as detectron2), or
    from the image file's header (EXIF rotation applied) for dicts without them."""
    flags = []
    for d in dataset_dicts:
        if "width" in d and "height" in d:
            flags.append(d["width"] > d["height"])
        else:
            width, height = image_size(d["file_name"])
            flags.append(width > height)
    return flags


@config_section("test_loader")
def build_test_loader(
    dataset_dicts: Sequence[dict[str, Any]],
    mapper: Callable[[dict], dict],
    *,
    batch_size: int = 1,
    num_workers: int = 2,
    bad_data: Literal["skip", "strict"] = "strict",
) -> InferenceLoader:
    """One pass over this rank's contiguous shard of the dataset (see :class:`InferenceSampler`).

    Args:
        dataset_dicts: the test set (dataset dicts).
        mapper: dict -> model input dict (e.g. ``DatasetMapper(is_train=False)``).
        batch_size: images per batch on this rank.
        num_workers: DataLoader worker processes (0: map in this process).
        bad_data: ``"strict"``: an image that cannot be read (missing, truncated, not an image, or
            of another size than its dict says) raises, naming the file; ``"skip"``: it is left
            out, with a warning naming the file, and listed by the loader's
            :meth:`InferenceLoader.skipped_images`, from which :func:`inference_on_dataset
            <framework.evaluation.inference_on_dataset>` leaves its ground truth out of the
            evaluation and counts it. The default is strict so that a metric computed from Python
            covers every image unless the caller asks otherwise; the main job passes its
            ``bad_data`` setting (``dataloader.test.bad_data``).

    Returns:
        an :class:`InferenceLoader` yielding lists of up to ``batch_size`` mapped dicts, in dataset
        order.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    _check_bad_data(bad_data)
    dataset = _InferenceDataset(MapDataset(dataset_dicts, mapper), skip_bad_images=bad_data == "skip")
    loader = DataLoader(dataset, sampler=InferenceSampler(len(dataset)), batch_size=batch_size, drop_last=False,
                        num_workers=num_workers, collate_fn=collate_loaded)
    return InferenceLoader(loader, skip_bad_images=bad_data == "skip")
