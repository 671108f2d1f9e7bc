"""What an augmentation is: a callable from one :class:`AugSample` (image + ground truth) to another.

The mapper (:class:`framework.data.mapper.DatasetMapper`) reads an image and its annotations into
an :class:`AugSample`, runs its ``augmentations`` in order, and turns the result into the model's
input (the image, and ``Instances`` clipped to it with emptied objects left out). Augmentations are
components of the ``AUGMENTATIONS`` registry, listed in the config (``input.train.augmentations``).

Randomness: an augmentation draws its random parameters from torch's (or Python's, numpy's) global
generator. The training loader seeds those per sample from the run's seed and the sample's
position (:mod:`framework.data.train_items`), so a run is reproducible and resumes exactly; the
test loader seeds them per image index.

A :class:`MixingAugmentation` (copy-paste, mixup, mosaic) also receives :class:`OtherSamples`, from
which it draws other images of the training set with their ground truth.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional, Protocol, Union

import torch
from torchvision import tv_tensors

from framework.config.signature import knobs
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks

__all__ = ["AugSample", "Augmentation", "MixingAugmentation", "OtherSamples"]

Masks = Union[PolygonMasks, BitMasks]


@dataclasses.dataclass(frozen=True)
class AugSample:
    """One image and its ground truth while augmentations run (each returns a new one).

    Attributes:
        image: (C, H, W) tensor: uint8 as read, float after a float resize.
        boxes: (N, 4) XYXY ``tv_tensors.BoundingBoxes`` in float64 with ``canvas_size == (H, W)``,
            so torchvision's functionals (``F.resize``, ``F.horizontal_flip``, ``F.crop``...)
            transform them. float64 and not clipped between steps, as detectron2's numpy boxes:
            they are clipped, in float32, to the final image when the ``Instances`` are made.
        classes: (N,) int64 category indices.
        masks: the N instance masks: :class:`PolygonMasks` (polygons stay polygons), ``(N, H, W)``
            :class:`BitMasks`, or None (no masks: ``mask_on=False``, or at test time).
    """

    image: torch.Tensor
    boxes: tv_tensors.BoundingBoxes
    classes: torch.Tensor
    masks: Optional[Masks] = None

    def __post_init__(self) -> None:
        n, size = len(self.boxes), self.image_size
        if tuple(self.boxes.canvas_size) != size:
            raise ValueError(f"AugSample: boxes.canvas_size {tuple(self.boxes.canvas_size)} != image size {size}")
        if len(self.classes) != n or (self.masks is not None and len(self.masks) != n):
            raise ValueError(f"AugSample: {n} boxes but {len(self.classes)} classes"
                             + ("" if self.masks is None else f" and {len(self.masks)} masks"))
        if isinstance(self.masks, BitMasks) and tuple(self.masks.image_size) != size:
            raise ValueError(f"AugSample: bit masks of size {tuple(self.masks.image_size)} on an image of size {size}")

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def __len__(self) -> int:
        """Number of objects."""
        return len(self.boxes)

    @classmethod
    def from_instances(cls, image: torch.Tensor, instances: Optional[Instances] = None) -> "AugSample":
        """The sample of a (C, H, W) ``image`` and its gt ``instances`` (``gt_boxes``,
        ``gt_classes``, optional ``gt_masks``; of size (H, W)); no instances: no objects."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if instances is None:
            instances = Instances((h, w), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
        boxes = tv_tensors.BoundingBoxes(instances.gt_boxes.tensor.double(), format="XYXY", canvas_size=(h, w))
        masks = instances.gt_masks if instances.has("gt_masks") else None
        return cls(image=image, boxes=boxes, classes=instances.gt_classes, masks=masks)

    def to_instances(self) -> Instances:
        """``Instances`` of size (H, W): ``gt_boxes`` (float32, clipped to the image),
        ``gt_classes`` and, with masks, ``gt_masks``. Emptied objects are still there (the mapper
        leaves them out with :func:`framework.data.detection_utils.filter_empty_instances`)."""
        boxes = Boxes(self.boxes.as_subclass(torch.Tensor))
        boxes.clip(self.image_size)
        out = Instances(self.image_size, gt_boxes=boxes, gt_classes=self.classes)
        if self.masks is not None:
            out.gt_masks = self.masks
        return out

    def select(self, keep: torch.Tensor) -> "AugSample":
        """The sample with only the objects ``keep`` ((N,) bool or int64 indices) picks (an
        augmentation that removes objects: a crop, an object covered by a pasted one)."""
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        boxes = tv_tensors.wrap(self.boxes.as_subclass(torch.Tensor)[keep], like=self.boxes)
        masks = None if self.masks is None else self.masks[keep]
        return dataclasses.replace(self, boxes=boxes, classes=self.classes[keep], masks=masks)


class OtherSamples(Protocol):
    """Where a :class:`MixingAugmentation` gets other samples of the training set."""

    def draw(self) -> AugSample:
        """Another training sample (drawn uniformly from the dataset, a new draw per call), as read:
        its image and ground truth before any augmentation. The draws depend only on the run's
        seed and the position of the sample being mapped, so resuming reproduces them."""
        ...


class Augmentation:
    """Base of the registered augmentations: a callable ``AugSample -> AugSample``.

    A subclass takes its knobs as keyword-only, annotated constructor arguments, draws its random
    parameters from the global generators (``torch.rand``...) inside ``__call__``, and transforms
    the image, boxes and masks together (:mod:`framework.data.augmentations.geometry` has the
    geometric operations for every kind of mask). It may remove objects
    (:meth:`AugSample.select`); those whose box or mask it empties are removed after the last
    augmentation anyway, and an image left without objects is still trained on (counted as
    ``data/empty_images``).

    Two class attributes tell the mapper, which checks them when it is built, what an augmentation
    cannot run without: ``train_only`` (e.g. a crop or a pad, which the test pipeline's mapping of
    predictions back to the original image by a rescale cannot undo) and ``needs_masks`` (it works
    on the objects' masks: the mapper must keep ``mask_on``).
    """

    train_only: ClassVar[bool] = False
    needs_masks: ClassVar[bool] = False

    def __call__(self, sample: AugSample) -> AugSample:
        raise NotImplementedError

    def __repr__(self) -> str:
        values = [f"{k.name}={getattr(self, k.name)!r}" for k in knobs(type(self)) if hasattr(self, k.name)]
        return f"{type(self).__name__}({', '.join(values)})"


class MixingAugmentation(Augmentation):
    """An augmentation that combines its sample with other samples of the training set
    (copy-paste, mixup, mosaic): it is called with :class:`OtherSamples` too. Training only: the
    training loader provides the draws (:mod:`framework.data.draws`)."""

    train_only = True

    def __call__(self, sample: AugSample, others: OtherSamples) -> AugSample:  # type: ignore[override]
        raise NotImplementedError

