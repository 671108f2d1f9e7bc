"""Geometric operations on a whole :class:`~framework.data.augmentations.base.AugSample`: the image,
its boxes and its masks (bit masks or polygons) transformed together.

Built on torchvision's ``transforms.v2`` functionals (boxes as ``tv_tensors.BoundingBoxes``, bit
masks as ``tv_tensors.Mask``); written here only where torchvision has no such operation: polygons
(scaled and mirrored exactly, rasterised only later inside each proposal box) and detectron2's
uint8 PIL resize of the image.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from framework.layers.resize import resize_image_pil
from framework.structures import BitMasks, PolygonMasks

from .base import AugSample, Masks

__all__ = ["resize", "resize_image_pil", "horizontal_flip", "crop", "pad"]



def resize(sample: AugSample, new_size: tuple[int, int], *, image: Optional[torch.Tensor] = None) -> AugSample:
    """The sample resized to ``new_size`` = (new_h, new_w).

    Args:
        sample: the sample, of size (H, W).
        new_size: the output size.
        image: the image already resized to ``new_size`` by the caller (another resampler, e.g.
            torchvision's float resize); default: :func:`resize_image_pil` of the sample's image.

    Boxes: x scaled by new_w / W, y by new_h / H (``F.resize`` of the float64 boxes). Bit masks:
    nearest-exact (pixel-centre sampling like PIL's NEAREST used by detectron2; PIL's fixed-point
    arithmetic can pick the neighbouring source row/column on ~0.1% of the pixels). Polygons: the
    same scale factors on their coordinates.
    """
    new_h, new_w = int(new_size[0]), int(new_size[1])
    if image is None:
        image = resize_image_pil(sample.image, (new_h, new_w))
    elif tuple(image.shape[-2:]) != (new_h, new_w):
        raise ValueError(f"resize: the given image is {tuple(image.shape[-2:])}, not the new size {(new_h, new_w)}")
    # torchvision's box resize computes its ratios in float32 from the canvas size; on float64
    # boxes corners may differ from detectron2's by ~1e-4 px on a 1333 px image.
    boxes = F.resize(sample.boxes, [new_h, new_w])
    return dataclasses.replace(sample, image=image, boxes=boxes, masks=_resize_masks(sample, (new_h, new_w)))


def _resize_masks(sample: AugSample, new_size: tuple[int, int]) -> Optional[Masks]:
    masks = sample.masks
    (old_h, old_w), (new_h, new_w) = sample.image_size, new_size
    if isinstance(masks, PolygonMasks):
        masks = PolygonMasks(masks.polygons)  # scale() replaces the arrays: the input stays intact
        masks.scale(new_w / old_w, new_h / old_h)
        return masks
    if isinstance(masks, BitMasks):
        if len(masks) == 0:
            return BitMasks(torch.zeros(0, new_h, new_w, dtype=torch.bool))
        if (old_h, old_w) == (new_h, new_w):
            return masks
        resized = F.resize(tv_tensors.Mask(masks.tensor.to(torch.uint8)), [new_h, new_w],
                           interpolation=InterpolationMode.NEAREST_EXACT)
        return BitMasks(resized.as_subclass(torch.Tensor).bool())
    return masks


def horizontal_flip(sample: AugSample) -> AugSample:
    """The sample mirrored left-right: x -> W - x for the boxes (corners swapped) and polygons, the
    image's and bit masks' columns reversed (``F.horizontal_flip``)."""
    width = sample.image_size[1]
    masks = sample.masks
    if isinstance(masks, PolygonMasks):
        masks = PolygonMasks(masks.polygons)
        masks.flip_horizontal(width)
    elif isinstance(masks, BitMasks):
        masks = BitMasks(F.horizontal_flip(tv_tensors.Mask(masks.tensor)).as_subclass(torch.Tensor))
    image = F.horizontal_flip(sample.image)  # a plain tensor is an image to torchvision
    return dataclasses.replace(sample, image=image, boxes=F.horizontal_flip(sample.boxes), masks=masks)


def crop(sample: AugSample, top: int, left: int, height: int, width: int) -> AugSample:
    """The region rows [top, top + height), columns [left, left + width) of the sample (inside the image).

    The image and bit masks are cropped (``F.crop``); boxes are translated and clamped to the
    region (``F.crop``: a box outside it becomes empty, and its object is removed after the last
    augmentation); polygons are translated only, as detectron2 does: what lies outside the region
    is cut when they are rasterised inside their (clamped) box.
    """
    h, w = sample.image_size
    if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= h and left + width <= w):
        raise ValueError(f"crop: rows [{top}, {top + height}) x columns [{left}, {left + width}) is not inside the "
                         f"{h}x{w} image")
    masks = sample.masks
    if isinstance(masks, PolygonMasks):
        offset = np.array([left, top], dtype=np.float64)
        masks = PolygonMasks([[(p.reshape(-1, 2) - offset).reshape(-1) for p in per] for per in masks.polygons])
    elif isinstance(masks, BitMasks):
        masks = BitMasks(masks.tensor[:, top:top + height, left:left + width])
    image = F.crop(sample.image, top, left, height, width)
    return dataclasses.replace(sample, image=image, boxes=F.crop(sample.boxes, top, left, height, width), masks=masks)


def pad(sample: AugSample, *, bottom: int = 0, right: int = 0, fill: float = 0.0) -> AugSample:
    """The sample padded with ``bottom`` rows and ``right`` columns (``F.pad``), to size (H + bottom, W + right).

    The image's new pixels are ``fill``; bit masks are padded with background (the padded area is
    no object); boxes and polygons keep their coordinates (the origin stays at the top left), the
    boxes' ``canvas_size`` grows. Padding on the bottom and right only is what detectron2's
    ``FixedSizeCrop`` does, so that the image's pixels keep their coordinates.
    """
    if bottom < 0 or right < 0:
        raise ValueError(f"pad: bottom and right must be >= 0, got bottom={bottom}, right={right}")
    if bottom == 0 and right == 0:
        return sample
    padding = [0, 0, int(right), int(bottom)]  # left, top, right, bottom
    masks = sample.masks
    if isinstance(masks, BitMasks):
        padded = F.pad(tv_tensors.Mask(masks.tensor.to(torch.uint8)), padding, fill=0)
        masks = BitMasks(padded.as_subclass(torch.Tensor).bool())
    image = F.pad(sample.image, padding, fill=fill)
    return dataclasses.replace(sample, image=image, boxes=F.pad(sample.boxes, padding), masks=masks)
