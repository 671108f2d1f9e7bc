"""Data loaders: dataset dicts + a mapper -> batches (lists of mapped dicts) for training and testing.

:func:`build_train_loader` and :func:`build_test_loader` are the ``dataloader.train`` and
``dataloader.test`` config sections. What they assemble lives beside them: the mapped dataset
(:mod:`~framework.data.map_dataset`), the training sampler (a ``TRAIN_SAMPLERS`` component,
:mod:`~framework.data.samplers`), the per-sample seeding, draws and counting of the training
stream (:mod:`~framework.data.train_items`, :mod:`~framework.data.draws`) and the test pass
(:mod:`~framework.data.inference_loader`).

Bad images (``bad_data="skip"``): both loaders' datasets return
:class:`~framework.data.skipping.LoadedItem` s, so the images they replaced (training) or left out
(test) travel beside the mapped dicts, never inside them (see :mod:`framework.data.skipping`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Optional

import torch
from torch.utils.data import DataLoader

from framework.errors import ConfigError
from framework.registry import TRAIN_SAMPLERS, Spec, config_section
from framework.utils import comm

from .detection_utils import image_size
from .inference_loader import InferenceDataset, InferenceLoader
from .map_dataset import MapDataset
from .samplers import InferenceSampler, InfiniteSampler, TrainingBatchSampler
from .skipping import collate_loaded
from .train_items import SeededMapDataset, SkipCountingLoader, worker_init_fn

__all__ = ["build_train_loader", "build_test_loader"]


@config_section("train_loader")
def build_train_loader(
    dataset_dicts: Sequence[dict[str, Any]],
    mapper: Callable[[dict], dict],
    *,
    total_batch_size: int,
    num_workers: int = 2,
    sampler: Spec[TRAIN_SAMPLERS] = "TrainingSampler",
    aspect_ratio_grouping: bool = True,
    seed: Optional[int] = None,
    start_iter: int = 0,
    bad_data: Literal["skip", "strict"] = "skip",
) -> Iterable[list[dict[str, Any]]]:
    """Infinite training batches of mapped dicts for this rank.

    Args:
        dataset_dicts: the training set (dataset dicts).
        mapper: dict -> model input dict (e.g. a :class:`~framework.data.mapper.DatasetMapper`
            with ``is_train=True``); one whose ``takes_draws`` is true also gets each sample's
            :class:`~framework.data.draws.SeededDraws` (mixing augmentations).
        total_batch_size: images per iteration over all ranks; each rank gets
            ``total_batch_size / world_size`` (must divide evenly).
        num_workers: DataLoader worker processes (0: map in this process).
        sampler: the ``TRAIN_SAMPLERS`` component giving the stream of dataset indices (a name or a
            mapping with ``name`` and knobs: ``TrainingSampler``, uniform; ``RepeatFactorTrainingSampler``,
            LVIS-style oversampling of images with rare categories). It is offered ``size``,
            ``dataset_dicts`` and ``seed``.
        aspect_ratio_grouping: batch landscape and portrait images separately.
        seed: seed of the sample order, of the augmentations and of the draws of other samples;
            None draws one shared by all ranks (not reproducible).
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
        forever (a new iterator restarts the stream at ``start_iter``). It also counts images
        that reach the model without any instance (``data/empty_images``, see
        :class:`~framework.data.train_items.SkipCountingLoader`).
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
    _check_bad_data(bad_data)
    batch_size = total_batch_size // world_size
    seed = int(comm.shared_random_seed() if seed is None else seed)

    index_sampler = TRAIN_SAMPLERS.build(sampler, path="dataloader.train.sampler",
                                         offered={"size": len(dataset_dicts), "dataset_dicts": dataset_dicts, "seed": seed})
    if not isinstance(index_sampler, InfiniteSampler):
        raise ConfigError(f"config path 'dataloader.train.sampler': {type(index_sampler).__name__} is not an "
                          "InfiniteSampler (framework.data.samplers), which the batching and exact resume rely on")
    batches = TrainingBatchSampler(index_sampler, batch_size, start_batch=start_iter,
                                   landscape=_landscape_flags(dataset_dicts) if aspect_ratio_grouping else None)
    loader = DataLoader(
        SeededMapDataset(MapDataset(dataset_dicts, mapper), seed, skip_bad_images=bad_data == "skip"),
        batch_sampler=batches,
        collate_fn=collate_loaded,
        num_workers=num_workers,
        worker_init_fn=functools.partial(worker_init_fn, seed=seed, rank=comm.get_rank()),
        # The loader draws its workers' base seed from this, not from the global torch generator.
        generator=torch.Generator().manual_seed(seed),
    )
    return SkipCountingLoader(loader, dict(getattr(dataset_dicts, "dropped", {})))


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
        mapper: dict -> model input dict (e.g. a :class:`~framework.data.mapper.DatasetMapper`
            with ``is_train=False``); item i is mapped with the global generators seeded from i.
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
    dataset = InferenceDataset(MapDataset(dataset_dicts, mapper), skip_bad_images=bad_data == "skip")
    loader = DataLoader(dataset, sampler=InferenceSampler(len(dataset)), batch_size=batch_size, drop_last=False,
                        num_workers=num_workers, collate_fn=collate_loaded)
    return InferenceLoader(loader, skip_bad_images=bad_data == "skip")
