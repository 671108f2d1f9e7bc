"""Other samples for one training sample: how a mixing augmentation (copy-paste, mixup, mosaic) gets them.

The training loader hands the mapper of each sample a :class:`DatasetDraws`: every ``draw(load)``
takes another dataset index from a generator of its own, seeded from the loader's seed and the
sample's position in the global sample stream (:class:`SeededDraws`), and returns ``load`` of that
index's dataset dict (the mapper decides what loading means: reading the image and its ground
truth). The draws therefore depend on nothing but (seed, position): not on the worker that maps
the sample, not on how many random numbers the augmentations took from the global generators, and
a resumed run, which replays positions from the iteration it resumes at, draws exactly what the
uninterrupted run drew. No state beyond the iteration is saved for them.

Unreadable images drawn under ``bad_data=skip`` are replaced by further draws and listed in
``skipped``, which the loader counts with the other replaced images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from .skipping import BAD_IMAGE_ERRORS, SkippedImage

__all__ = ["DatasetDraws", "SeededDraws", "MAX_REPLACEMENTS"]

T = TypeVar("T")

#: How many other images a skipping loader tries before it gives up on a sample (or on a draw).
MAX_REPLACEMENTS = 10


class DatasetDraws(Protocol):
    """Other samples of the training set for the mapping of one sample."""

    def draw(self, load: Callable[[dict[str, Any]], T]) -> T:
        """``load(dataset_dict)`` of another dataset item, a new one per call (``load`` must not
        modify the dict: it may be the dataset's own)."""
        ...


class _Dataset(Protocol):
    def __len__(self) -> int: ...

    def raw(self, idx: int) -> dict[str, Any]: ...


class SeededDraws:
    """:class:`DatasetDraws` of one sample: uniform dataset indices from a generator seeded with ``seed``.

    Args:
        dataset: what to draw from: ``len()`` and ``raw(index)`` (a :class:`framework.data.map_dataset.MapDataset`).
        seed: the sample's own seed for draws, e.g. ``derive_seed(loader_seed, SeedStream.TRAIN_DRAWS, position)``.
        skip_bad_images: replace a drawn image that cannot be read (listed in ``skipped``) by
            another draw, up to :data:`MAX_REPLACEMENTS` times; else its error propagates.

    Attributes:
        indices: the dataset indices whose ``load`` succeeded, in draw order.
        skipped: the drawn images that could not be read.
    """

    def __init__(self, dataset: _Dataset, seed: int, *, skip_bad_images: bool) -> None:
        if len(dataset) == 0:
            raise ValueError("SeededDraws: nothing to draw from (empty dataset)")
        self.dataset = dataset
        self.seed = int(seed)
        self.skip_bad_images = skip_bad_images
        self.indices: list[int] = []
        self.skipped: list[SkippedImage] = []
        self._generator: torch.Generator | None = None  # made on the first draw: most samples draw none

    def draw(self, load: Callable[[dict[str, Any]], T]) -> T:
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        failures = 0
        while True:
            index = int(torch.randint(len(self.dataset), (), generator=self._generator))
            d = self.dataset.raw(index)
            try:
                out = load(d)
            except BAD_IMAGE_ERRORS as e:
                if not self.skip_bad_images:
                    raise
                self.skipped.append(SkippedImage.from_error(d, e))
                failures += 1
                if failures > MAX_REPLACEMENTS:
                    raise RuntimeError(
                        f"{failures} images drawn in a row for a mixing augmentation could not be read (bad_data=skip "
                        f"draws another one, up to {MAX_REPLACEMENTS} times); the first: {self.skipped[-failures].reason}"
                    ) from e
                continue
            self.indices.append(index)
            return out
