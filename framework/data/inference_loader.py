"""The test loader's pass over a dataset: mapped dicts in dataset order, unreadable images left out and named."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Optional

from torch.utils.data import DataLoader, Dataset

from framework.utils.seeding import SeedStream, derive_seed, seeded_global_rngs

from .map_dataset import MapDataset
from .skipping import BAD_IMAGE_ERRORS, LoadedBatch, LoadedItem, SkippedImage

__all__ = ["InferenceDataset", "InferenceLoader"]

logger = logging.getLogger(__name__)


class InferenceDataset(Dataset):
    """Item ``i`` of ``dataset`` as a :class:`~framework.data.skipping.LoadedItem`; with
    ``skip_bad_images``, an image that cannot be read gives an item without a mapped dict that
    names it (a test set has no replacement for it: every image is evaluated once).

    Item ``i`` is mapped with the global generators seeded from ``i`` (and restored afterwards):
    whatever random draws a test pipeline makes, an image maps the same in every pass, on any
    worker, and the caller's random streams are left alone.
    """

    def __init__(self, dataset: MapDataset, *, skip_bad_images: bool) -> None:
        self.dataset = dataset
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> LoadedItem:
        try:
            with seeded_global_rngs(derive_seed(SeedStream.TEST_IMAGE, idx)):
                return LoadedItem(mapped=self.dataset[idx])
        except BAD_IMAGE_ERRORS as e:
            if not self.skip_bad_images:
                raise
            return LoadedItem(mapped=None, skipped=(SkippedImage.from_error(self.dataset.raw(idx), e),))


class InferenceLoader:
    """One pass over this rank's shard of a test set, as lists of mapped dicts (what
    :func:`framework.data.build.build_test_loader` returns).

    Under ``bad_data="skip"`` an image that cannot be read is left out of its batch (a batch left
    empty is not yielded), logged with a warning that names the file, and listed by
    :meth:`skipped_images` (this implements :class:`~framework.data.skipping.ReportsSkippedImages`).

    Args:
        loader: a DataLoader over an :class:`InferenceDataset` collated by
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
