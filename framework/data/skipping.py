"""The typed channel through which the data loaders report images they could not use (``bad_data=skip``).

A loader's dataset returns one :class:`LoadedItem` per sample: the mapped dict (or none, when the
image is left out) and the :class:`SkippedImage` entries it gave up on. :func:`collate_loaded`
turns a batch of them into a :class:`LoadedBatch`, whose ``inputs`` go to the model and whose
``skipped`` go to whoever counts them. The model therefore only ever sees mapped dicts, and no
bookkeeping rides inside them.

A loader that may leave images out of a pass implements :class:`ReportsSkippedImages`, which is
how :func:`framework.evaluation.inference_on_dataset` learns which images it never saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol, runtime_checkable

from .detection_utils import ImageReadError, ImageSizeMismatchError

__all__ = [
    "BAD_IMAGE_ERRORS",
    "SkippedImage",
    "LoadedItem",
    "LoadedBatch",
    "collate_loaded",
    "ReportsSkippedImages",
]

#: Errors of one image file (missing, truncated, not an image, another size than its dict says):
#: under ``bad_data="skip"`` a loader leaves such an image out (or replaces it) instead of stopping.
#: Any other error (a bug in a mapper, a bad annotation) still stops the run.
BAD_IMAGE_ERRORS: tuple[type[Exception], ...] = (ImageReadError, ImageSizeMismatchError)


@dataclass(frozen=True)
class SkippedImage:
    """An image a loader replaced (training) or left out (test) because it could not be used.

    Attributes:
        file_name: the image file, as its dataset dict names it.
        image_id: the dataset dict's ``image_id`` (``None`` when it has none): what an evaluator
            uses to leave the image's ground truth out.
        reason: the error message, which names the file and what is wrong with it.
    """

    file_name: str
    image_id: Optional[int]
    reason: str

    @classmethod
    def from_error(cls, dataset_dict: Mapping[str, Any], error: BaseException) -> "SkippedImage":
        """The entry for ``dataset_dict``, whose image raised ``error`` when mapped."""
        return cls(file_name=str(dataset_dict.get("file_name")), image_id=dataset_dict.get("image_id"),
                   reason=str(error))


@dataclass(frozen=True)
class LoadedItem:
    """What a loader's dataset returns for one sample.

    Attributes:
        mapped: the mapper's output (the model input dict), or ``None`` when the sample's image was
            left out.
        skipped: the images given up on while producing this sample: the one left out, or those a
            training loader replaced before it found a readable one.
    """

    mapped: Optional[dict[str, Any]]
    skipped: tuple[SkippedImage, ...] = ()


@dataclass(frozen=True)
class LoadedBatch:
    """A collated batch: ``inputs`` for the model (per-image dicts, images of different sizes, so not
    stacked) and the ``skipped`` images of its samples, in sample order."""

    inputs: list[dict[str, Any]]
    skipped: list[SkippedImage]


def collate_loaded(items: Sequence[LoadedItem]) -> LoadedBatch:
    """The DataLoader ``collate_fn`` of the loaders: a list of :class:`LoadedItem` -> :class:`LoadedBatch`.

    Items without a mapped dict (left out) contribute only their ``skipped`` entries, so a batch
    may hold fewer inputs than samples, or none.
    """
    inputs = [item.mapped for item in items if item.mapped is not None]
    skipped = [s for item in items for s in item.skipped]
    return LoadedBatch(inputs=inputs, skipped=skipped)


@runtime_checkable
class ReportsSkippedImages(Protocol):
    """A loader that may leave unreadable images out of a pass, and says which.

    :func:`framework.evaluation.inference_on_dataset` calls ``skipped_images()`` after a pass, tells
    the evaluator (:meth:`framework.evaluation.DatasetEvaluator.process_skipped`) and reports the
    count over all processes in its results.
    """

    def skipped_images(self) -> Optional[list[SkippedImage]]:
        """The images this process's latest pass left out (``[]`` when none), or ``None`` when this
        loader never leaves an image out (it raises instead, as under ``bad_data="strict"``)."""
        ...
