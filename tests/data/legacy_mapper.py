"""FROZEN REFERENCE, test-only: framework/data/mapper.py as it was before augmentations became
components (git 5c64895), with the ``Literal`` flags ``sample_style``, ``resize_style`` and
``random_flip``. tests/data/test_mapper_parity.py maps the same dicts with it and with the
component pipeline and requires bit-identical outputs. Only the imports (absolute) and the
config-section registration (removed) differ from the original; do not edit otherwise.

DatasetMapper: one dataset dict -> one model input (resized, maybe flipped image + gt Instances).

The geometry follows detectron2's default ``DatasetMapper`` (``ResizeShortestEdge`` then
``RandomFlip`` in training) so that models trained or evaluated here see the same inputs. The
pixel and target operations are torchvision's ``transforms.v2`` functionals (on ``tv_tensors``;
the image resize on a PIL image, for pixels identical to detectron2's), applied with the same
parameters to the image, the boxes and bit masks; polygons stay polygons
(scaled and mirrored exactly) and are only rasterised later, inside each proposal box.

Randomness (the sampled size and the flip) is drawn from torch's global generator. The training
loader (:func:`framework.data.build.build_train_loader`) seeds it per sample, so a run is
reproducible given its seed, whatever the number of workers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from framework.errors import ConfigError, did_you_mean
from framework.layers.resize import resize_shortest_edge_torchvision
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks

from framework.data.detection_utils import (
    IMAGE_FORMATS,
    MASK_FORMATS,
    annotations_to_instances,
    check_image_size,
    filter_empty_instances,
    read_image,
)

__all__ = [
    "DatasetMapper",
    "resize_shortest_edge_shape",
    "transform_image",
    "transform_instances",
]


def resize_shortest_edge_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output (new_h, new_w) of detectron2's ``ResizeShortestEdge`` for a (height, width) image.

    The shorter side becomes ``short_edge`` unless the longer side would then exceed
    ``max_size``, in which case the longer side becomes ``max_size``; sides are rounded half up.
    ``short_edge == 0`` means no resize. E.g. 480x640 -> 800x1067 and 100x1000 -> 133x1333 for
    (800, 1333).
    """
    if short_edge == 0:
        return height, width
    size = float(short_edge)
    scale = size / min(height, width)
    # Same operation order as detectron2, so float rounding (and thus the +0.5 rounding) matches.
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def transform_image(image: torch.Tensor, new_size: tuple[int, int], flip: bool) -> torch.Tensor:
    """Resize a (C, H, W) uint8 image to ``new_size`` (bilinear), then maybe mirror it.

    The resize runs on a PIL image (``F.resize`` dispatches to PIL's resampler), exactly as
    detectron2 resizes: torch's antialiased bilinear kernel differs from PIL's by 1-2 levels on a
    few percent of the pixels, and a model-zoo checkpoint must see the very same pixels.

    Returns:
        (C, new_h, new_w) plain uint8 tensor.
    """
    if tuple(image.shape[-2:]) != tuple(new_size):
        resized = F.resize(F.to_pil_image(image), list(new_size), interpolation=InterpolationMode.BILINEAR)
        image = F.pil_to_tensor(resized)
    img = tv_tensors.Image(image)
    if flip:
        img = F.horizontal_flip(img)
    return img.as_subclass(torch.Tensor).contiguous()


def transform_instances(instances: Instances, new_size: tuple[int, int], flip: bool) -> Instances:
    """Apply the image's resize to ``new_size`` (and horizontal flip) to gt boxes and masks.

    Boxes go through ``tv_tensors.BoundingBoxes`` (x scaled by new_w / old_w, y by new_h / old_h;
    flip: x -> W - x, the corners swapped) and are clipped to the new image; BitMasks through
    ``tv_tensors.Mask`` (nearest-exact: pixel-centre sampling like PIL's NEAREST used by detectron2;
    PIL's fixed-point arithmetic can pick the neighbouring source row/column on ~0.1% of the
    pixels); PolygonMasks have their coordinates scaled and mirrored. Other fields are kept as is.

    Args:
        instances: gt of an image of ``instances.image_size`` = (H, W).
        new_size: (new_h, new_w) of the transformed image.

    Returns:
        new Instances of image size ``new_size`` (the input is not modified).
    """
    old_h, old_w = instances.image_size
    new_h, new_w = int(new_size[0]), int(new_size[1])
    out = Instances((new_h, new_w))
    for name, value in instances.get_fields().items():
        if isinstance(value, Boxes):
            # float64 like detectron2's numpy arithmetic (torchvision's scale ratios are float32:
            # corners may differ from detectron2's by ~1e-4 px on a 1333 px image).
            boxes = tv_tensors.BoundingBoxes(value.tensor.double(), format="XYXY", canvas_size=(old_h, old_w))
            boxes = F.resize(boxes, [new_h, new_w])
            if flip:
                boxes = F.horizontal_flip(boxes)
            value = Boxes(boxes.as_subclass(torch.Tensor))
            value.clip((new_h, new_w))
        elif isinstance(value, PolygonMasks):
            value = PolygonMasks(value.polygons)  # scale/flip replace the arrays: the input stays intact
            value.scale(new_w / old_w, new_h / old_h)
            if flip:
                value.flip_horizontal(new_w)
        elif isinstance(value, BitMasks):
            if len(value) == 0:
                value = BitMasks(torch.zeros(0, new_h, new_w, dtype=torch.bool))
            else:
                masks = tv_tensors.Mask(value.tensor.to(torch.uint8))
                if (old_h, old_w) != (new_h, new_w):
                    masks = F.resize(masks, [new_h, new_w], interpolation=InterpolationMode.NEAREST_EXACT)
                if flip:
                    masks = F.horizontal_flip(masks)
                value = BitMasks(masks.as_subclass(torch.Tensor).bool())
        out.set(name, value)
    return out


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"DatasetMapper: {name} must be one of {list(choices)}, got {value!r}.{did_you_mean(str(value), choices)}")


class DatasetMapper:
    """Callable turning a dataset dict into the input dict of a detector (detectron2's default mapper).

    Knobs:
        is_train: training adds random resizing/flipping and the gt ``instances``; testing keeps
            no annotations.
        min_size: shortest-edge lengths: training samples one per image (``choice``: one of the
            values; ``range``: a uniform integer in [min_size[0], min_size[1]]); testing takes a
            single value. 0 means no resize.
        max_size: upper bound on the longest edge after resizing.
        sample_style: how training samples ``min_size``.
        resize_style: ``"detectron2"``: sides rounded half up, PIL bilinear resize of the uint8
            image (what detectron2 and its model zoo see); ``"torchvision"``: sides floored, float
            bilinear resize without rounding, as torchvision's detection models resize internally
            (:func:`framework.layers.resize.resize_shortest_edge_torchvision`, bit for bit
            torchvision's resize; the image is then float). torchvision normalises before resizing
            and the model after, so the model's input matches torchvision's to float rounding
            (tests/checkpoint/test_torchvision_equivalence.py checks the detections to 2e-2 px):
            for bit-identical inputs resize in the model instead, GeneralizedRCNN's ``test_resize``.
        random_flip: ``"horizontal"``: mirror with probability 0.5 in training (never at test).
        image_format: channel order of the output image (must match the model's ``input_format``).
        mask_format: ``"polygon"`` keeps polygon masks as polygons (images with RLE masks get
            BitMasks); ``"bitmask"`` rasterises all masks. See :func:`annotations_to_instances`.
        mask_on: add ``gt_masks`` (needs a ``segmentation`` on every non-crowd annotation).

    Call: ``mapper(dataset_dict) -> dict`` (the input dict is deep-copied, never modified) with
        ``image``: (3, H', W') tensor in ``image_format``, resized (and maybe flipped); uint8
        (float32 with ``resize_style="torchvision"``);
        ``height``, ``width``: the ORIGINAL image size (predictions are mapped back to it);
        ``file_name``, ``image_id`` and any other key of the dict, except ``annotations``;
        ``instances`` (training only): Instances of size (H', W') with ``gt_boxes``, ``gt_classes``
        (and ``gt_masks``), crowd annotations and instances emptied by the resize left out.
    """

    def __init__(
        self,
        *,
        is_train: bool,
        min_size: Sequence[int] = (800,),
        max_size: int = 1333,
        sample_style: Literal["choice", "range"] = "choice",
        resize_style: Literal["detectron2", "torchvision"] = "detectron2",
        random_flip: Literal["none", "horizontal"] = "horizontal",
        image_format: Literal["BGR", "RGB"] = "BGR",
        mask_format: Literal["polygon", "bitmask"] = "polygon",
        mask_on: bool = True,
    ) -> None:
        _check_choice("sample_style", sample_style, ("choice", "range"))
        _check_choice("resize_style", resize_style, ("detectron2", "torchvision"))
        _check_choice("random_flip", random_flip, ("none", "horizontal"))
        _check_choice("image_format", image_format, IMAGE_FORMATS)
        _check_choice("mask_format", mask_format, MASK_FORMATS)
        sizes = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
            raise ConfigError(f"DatasetMapper: min_size must be a non-empty list of non-negative ints, got {min_size!r}")
        if not isinstance(max_size, int) or max_size <= 0:
            raise ConfigError(f"DatasetMapper: max_size must be a positive int, got {max_size!r}")
        if not is_train and len(sizes) != 1:
            raise ConfigError(f"DatasetMapper(is_train=False): min_size must hold a single test size, got {list(sizes)}")
        if is_train and sample_style == "range" and (len(sizes) != 2 or sizes[0] > sizes[1]):
            raise ConfigError(f"DatasetMapper: sample_style='range' needs min_size = [low, high] with low <= high, "
                              f"got {list(sizes)}")
        self.is_train = bool(is_train)
        self.min_size = sizes
        self.max_size = max_size
        self.sample_style = sample_style
        self.resize_style = resize_style
        self.random_flip = random_flip
        self.image_format = image_format
        self.mask_format = mask_format
        self.mask_on = mask_on

    def __repr__(self) -> str:
        return (f"DatasetMapper(is_train={self.is_train}, min_size={self.min_size}, max_size={self.max_size}, "
                f"sample_style={self.sample_style!r}, resize_style={self.resize_style!r}, random_flip={self.random_flip!r}, "
                f"image_format={self.image_format!r}, mask_format={self.mask_format!r}, mask_on={self.mask_on})")

    # ------------------------------------------------------------------ random parameters
    def sample_short_edge(self) -> int:
        """The shortest-edge length for one image (random in training, from torch's global RNG)."""
        if not self.is_train:
            return self.min_size[0]
        if self.sample_style == "range":
            return int(torch.randint(self.min_size[0], self.min_size[1] + 1, ()).item())
        return self.min_size[int(torch.randint(len(self.min_size), ()).item())]

    def sample_flip(self) -> bool:
        """Whether to mirror one image (p = 0.5 in training with ``random_flip="horizontal"``)."""
        if not self.is_train or self.random_flip == "none":
            return False
        return bool(torch.rand(()).item() < 0.5)

    # ------------------------------------------------------------------ mapping
    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        d = copy.deepcopy(dataset_dict)  # the caller's dict (e.g. the dataset list) must stay intact
        image = read_image(d["file_name"], format=self.image_format)
        check_image_size(d, image)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        short_edge = self.sample_short_edge()
        flip = self.sample_flip()
        if self.resize_style == "torchvision":
            image = resize_shortest_edge_torchvision(image, short_edge, self.max_size)
            new_size = (int(image.shape[-2]), int(image.shape[-1]))
            d["image"] = (image.flip(-1) if flip else image).contiguous()
        else:
            new_size = resize_shortest_edge_shape(h, w, short_edge, self.max_size)
            d["image"] = transform_image(image, new_size, flip)

        annos = d.pop("annotations", None)
        if not self.is_train or annos is None:
            return d
        annos = [a for a in annos if a.get("iscrowd", 0) == 0]
        if self.mask_on:
            missing = [a.get("id") for a in annos if "segmentation" not in a]
            if missing:
                raise ValueError(f"{d['file_name']}: annotations {missing} have no 'segmentation' but mask_on=True; "
                                 "use mask_on=False to train without masks")
        else:
            annos = [{k: v for k, v in a.items() if k != "segmentation"} for a in annos]
        try:
            instances = annotations_to_instances(annos, (h, w), mask_format=self.mask_format)
        except ValueError as e:
            raise ValueError(f"{d['file_name']} (image_id={d.get('image_id')}): {e}") from e
        d["instances"] = filter_empty_instances(transform_instances(instances, new_size, flip))
        return d
