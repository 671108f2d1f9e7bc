"""The training loader's per-sample work: each sample mapped under its own seed, unreadable images
replaced, other samples drawn for mixing augmentations, and what was replaced or emptied counted.

Reproducibility: every item of the sample stream has its own seed, derived from the loader's
``seed`` and the item's position in the global stream; Python's ``random``, numpy's and torch's
global generators are seeded with it just while that item is mapped, and the other samples it
draws come from a generator seeded from (seed, position) too (:mod:`framework.data.draws`). The
batches therefore depend only on ``seed`` (and the iteration the loader starts at), not on
``num_workers`` nor on which worker mapped which item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset

from framework.utils.seeding import SeedStream, derive_seed, seed_global_rngs, seeded_global_rngs

from .draws import MAX_REPLACEMENTS, SeededDraws
from .map_dataset import DatasetMappingError, MapDataset
from .skipping import BAD_IMAGE_ERRORS, LoadedBatch, LoadedItem, SkippedImage

__all__ = ["SeededMapDataset", "SkipCountingLoader", "draws_seed", "worker_init_fn"]

logger = logging.getLogger(__name__)

def draws_seed(seed: int, position: int) -> int:
    """The seed of the :class:`~framework.data.draws.SeededDraws` of the sample at ``position`` of
    the sample stream of a loader seeded with ``seed`` (anything that replays the loader's draws,
    e.g. tools/visualize_data.py, calls this)."""
    return derive_seed(seed, SeedStream.TRAIN_DRAWS, position)


def worker_init_fn(worker_id: int, *, seed: int, rank: int = 0) -> None:
    """Seed a DataLoader worker's global generators from (``seed``, ``rank``, ``worker_id``).

    Use with ``functools.partial(worker_init_fn, seed=..., rank=...)``. The training loader also
    seeds every item on its own (see the module docstring); this covers anything else in the
    worker that draws random numbers.
    """
    seed_global_rngs(derive_seed(seed, SeedStream.LOADER_WORKER, rank, worker_id))


class SeededMapDataset(Dataset):
    """Maps item ``(position, index)`` with the global generators seeded from (seed, position).

    Returns a :class:`~framework.data.skipping.LoadedItem`. A mapper that takes draws gets a
    :class:`~framework.data.draws.SeededDraws` seeded from (seed, ``SeedStream.TRAIN_DRAWS``, position).
    With ``skip_bad_images``, an image that cannot be read is replaced by the next dataset index
    (deterministically, so resuming stays exact) and listed in the item's ``skipped``, with the
    unreadable images its draws replaced, for the loader to count.
    """

    def __init__(self, dataset: MapDataset, seed: int, *, skip_bad_images: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.skip_bad_images = skip_bad_images

    def __getitem__(self, key: tuple[int, int]) -> LoadedItem:
        position, index = key
        skipped: list[SkippedImage] = []
        with seeded_global_rngs(derive_seed(self.seed, SeedStream.TRAIN_SAMPLE, position)):
            for attempt in range(min(MAX_REPLACEMENTS + 1, len(self.dataset))):
                candidate = (index + attempt) % len(self.dataset)
                # Made afresh for each attempt: the draws depend on (seed, position) only.
                draws = SeededDraws(self.dataset, draws_seed(self.seed, position),
                                    skip_bad_images=self.skip_bad_images)
                try:
                    out = self.dataset.map(candidate, draws=draws)
                except BAD_IMAGE_ERRORS as e:
                    if not self.skip_bad_images:
                        raise
                    skipped.append(SkippedImage.from_error(self.dataset.raw(candidate), e))
                    continue
                return LoadedItem(mapped=out, skipped=tuple(skipped + draws.skipped))
        raise DatasetMappingError(f"{len(skipped)} images in a row could not be read (bad_data=skip replaces an "
                                  f"unreadable image by the next one, trying up to {MAX_REPLACEMENTS}); the first: "
                                  f"{skipped[0].reason}")


class SkipCountingLoader:
    """Iterates the DataLoader's :class:`~framework.data.skipping.LoadedBatch` es and yields their
    ``inputs``; counts what the model will not learn from, and puts the counts in the event storage:

    * ``data/skipped_images``: images the workers replaced because they could not be read (logged
      with a warning naming each);
    * ``data/empty_images``: training images that reach the model without any instance: every
      object was removed on the way (a crop or a paste covering them all, boxes squashed to
      nothing), since images without annotations are left out when the dataset is loaded. They
      stay in the batch as background-only images, as in detectron2;
    * ``data/dropped/<reason>``: what loading the dataset dropped.
    """

    def __init__(self, loader: DataLoader, dropped_at_load: dict[str, int]) -> None:
        self.loader = loader
        self.dropped_at_load = dropped_at_load
        self.num_skipped = 0
        self.num_empty = 0

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        from framework.utils.events import put_scalars

        put_scalars(**{f"data/dropped/{k}": float(v) for k, v in self.dropped_at_load.items()},
                    **{"data/skipped_images": float(self.num_skipped), "data/empty_images": float(self.num_empty)},
                    smoothing_hint=False)
        batch: LoadedBatch
        for batch in self.loader:
            if batch.skipped:
                self.num_skipped += len(batch.skipped)
                for image in batch.skipped:
                    logger.warning("bad_data=skip: replaced an unreadable training image (%d so far): %s",
                                   self.num_skipped, image.reason)
                put_scalars(**{"data/skipped_images": float(self.num_skipped)}, smoothing_hint=False)
            empty = sum(1 for d in batch.inputs if "instances" in d and len(d["instances"]) == 0)
            if empty:
                if self.num_empty == 0:
                    logger.info("a training image reached the model without any instance (all removed by the "
                                "augmentations); such images are counted in data/empty_images")
                self.num_empty += empty
                put_scalars(**{"data/empty_images": float(self.num_empty)}, smoothing_hint=False)
            yield batch.inputs
