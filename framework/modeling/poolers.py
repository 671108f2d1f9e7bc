"""RoI poolers: crop a fixed-size feature grid per box, from the FPN level that suits the box size.

Registered in ``ROI_POOLERS`` as ``ROIPool`` (quantised max pooling), ``ROIAlign`` (bilinear, no
half-pixel shift: the original Mask R-CNN op) and ``ROIAlignV2`` (bilinear with the half-pixel shift,
detectron2's default for FPN models).
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import torch
from torch import nn
from torchvision.ops import roi_pool

from framework.errors import ConfigError
from framework.layers.memory_format import is_channels_last
from framework.layers.level_pooling import pool_by_level
from framework.layers.parallel_ops import roi_align, roi_align_levels
from framework.registry import ROI_POOLERS
from framework.structures.boxes import Boxes

__all__ = [
    "ROIPooler",
    "ROIPool",
    "ROIAlign",
    "ROIAlignV2",
    "assign_boxes_to_levels",
    "convert_boxes_to_pooler_format",
    "pooler_rois",
]


def assign_boxes_to_levels(
    box_lists: Sequence[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int,
    canonical_level: int,
) -> torch.Tensor:
    """FPN level of every box (Eqn. 1 of the FPN paper), as an offset from ``min_level``.

    level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps)), clamped to
    [min_level, max_level]; eps is the float64 machine epsilon, as in detectron2.

    Args:
        box_lists: one Boxes per image; M boxes in total.

    Returns:
        (M,) int64 in [0, max_level - min_level], boxes in image-then-box order.
    """
    box_sizes = torch.sqrt(Boxes.cat(list(box_lists)).area())
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + sys.float_info.epsilon))
    levels = torch.clamp(levels, min=min_level, max=max_level)  # too small/large boxes go to the end levels
    return levels.to(torch.int64) - min_level


def convert_boxes_to_pooler_format(box_lists: Sequence[Boxes]) -> torch.Tensor:
    """Boxes of a batch as the (M, 5) ``(batch_index, x0, y0, x1, y1)`` rows torchvision RoI ops take.

    Args:
        box_lists: one Boxes per image, N images, M boxes in total.
    """
    boxes = Boxes.cat(list(box_lists)).tensor
    if len(box_lists) == 1:  # no counts to read: an exported graph (one image) has a symbolic box count
        image_index = boxes.new_zeros(boxes.shape[0])
    else:
        counts = torch.tensor([len(b) for b in box_lists], device=boxes.device)
        image_index = torch.repeat_interleave(torch.arange(len(box_lists), dtype=boxes.dtype, device=boxes.device), counts)
    return torch.cat([image_index[:, None], boxes], dim=1)


def pooler_rois(box_lists: Sequence[Boxes], feature_dtype: torch.dtype) -> torch.Tensor:
    """:func:`convert_boxes_to_pooler_format`'s (K, 5) rois in the dtype the pooling reads: the
    features' float dtype, except bf16 / fp16 features (autocast), where they stay float32.

    bf16 keeps 8 bits of mantissa: a coordinate of 300 px would be rounded to a multiple of 2 px
    (fp16: 0.25 px) before pooling, moving every RoI by up to a pixel. The pooling ops take float32
    rois with reduced-precision features (:func:`framework.layers.parallel_ops.roi_align` pools in
    float32 and rounds the output back, as torchvision's autocast kernels do).
    """
    rois = convert_boxes_to_pooler_format(box_lists)
    if feature_dtype in (torch.bfloat16, torch.float16):
        return rois
    return rois.to(feature_dtype)


def _levels_from_scales(scales: Sequence[float]) -> tuple[int, int]:
    """(min_level, max_level) for scales 1/2^min, 1/2^(min+1), ..., 1/2^max; a clear error otherwise."""
    scales = list(scales)
    if not scales or any(s <= 0 for s in scales):
        raise ConfigError(f"ROI pooler: scales must be a non-empty list of positive 1/stride values, got {scales}")
    min_level = -math.log2(scales[0])
    if not math.isclose(min_level, round(min_level)):
        raise ConfigError(f"ROI pooler: scale {scales[0]} is not 1/stride for a power-of-2 stride; scales {scales}")
    min_level = round(min_level)
    expected = [2.0 ** -(min_level + i) for i in range(len(scales))]
    if not all(math.isclose(s, e) for s, e in zip(scales, expected)):
        raise ConfigError(
            f"ROI pooler: scales {scales} do not form a pyramid of consecutive levels; "
            f"expected {expected} (each level half the scale of the previous one)"
        )
    if min_level < 0:
        raise ConfigError(f"ROI pooler: scales must be <= 1 (stride >= 1), got {scales}")
    return min_level, min_level + len(scales) - 1


class ROIPooler(nn.Module):
    """Base of the RoI poolers: level assignment and batching; subclasses implement :meth:`pool`.

    Args:
        output_size: pooled size, an int (square) or (height, width).
        scales: 1 / stride of each input level, from the finest: e.g. (1/4, 1/8, 1/16, 1/32).
        canonical_box_size: box size (sqrt of area, pixels) that maps to ``canonical_level``.
        canonical_level: FPN level of a canonical box (4 = stride 16, as in the FPN paper).
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: Sequence[float],
        *,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        output_size = tuple(output_size)
        if len(output_size) != 2 or not all(isinstance(s, int) and s > 0 for s in output_size):
            raise ConfigError(f"ROI pooler: output_size must be a positive int or (height, width), got {output_size}")
        if canonical_box_size <= 0:
            raise ConfigError(f"ROI pooler: canonical_box_size must be > 0, got {canonical_box_size}")
        self.output_size: tuple[int, int] = output_size
        self.scales = [float(s) for s in scales]
        self.min_level, self.max_level = _levels_from_scales(self.scales)
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        """Pool ``rois`` (K, 5) from one level ``feature`` (N, C, H, W) -> (K, C, *output_size)."""
        raise NotImplementedError

    def forward(self, x: list[torch.Tensor], box_lists: list[Boxes]) -> torch.Tensor:
        """Pool every box of every image from its level.

        Args:
            x: one (N, C, Hi, Wi) feature map per level, in the order of ``scales``.
            box_lists: N Boxes (one per image) in input-image pixels.

        Returns:
            (M, C, out_h, out_w), M = total number of boxes, image-then-box order, in the memory
            format of ``x[0]`` (channels_last features give channels_last crops).
        """
        if len(x) != len(self.scales):
            raise ValueError(
                f"{type(self).__name__} was built for {len(self.scales)} levels (scales {self.scales}) "
                f"but got {len(x)} feature maps"
            )
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"{type(self).__name__}: {len(box_lists)} box lists for a batch of {x[0].size(0)} images")
        num_channels = x[0].shape[1]
        if len(box_lists) == 0:
            return x[0].new_zeros((0, num_channels, *self.output_size))
        # Zero boxes in total still go through the ops below (which return (0, C, h, w)), so the
        # output stays connected to the features' graph, as in detectron2.
        rois = pooler_rois(box_lists, x[0].dtype)
        memory_format = torch.channels_last if is_channels_last(x[0]) else torch.contiguous_format
        if len(x) == 1:
            return self.pool(x[0], rois, self.scales[0]).contiguous(memory_format=memory_format)

        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        return self.pool_levels(x, rois, levels)

    def pool_levels(self, x: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Pool RoI k (of ``rois`` (K, 5)) from ``x[levels[k]]`` -> (K, C, *output_size), in the
        memory format of ``x[0]``. Here :meth:`pool` level by level; a subclass may pool all the
        levels at once."""
        return pool_by_level(x, rois, levels, self.output_size,
                             lambda level, level_rois: self.pool(x[level], level_rois, self.scales[level]))

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, "
            f"canonical_box_size={self.canonical_box_size}, canonical_level={self.canonical_level}"
        )


@ROI_POOLERS.register()
class ROIPool(ROIPooler):
    """RoI max pooling with quantised box coordinates (Fast R-CNN), via ``torchvision.ops.roi_pool``.

    Takes the base class's arguments (no sampling: max pooling reads every cell of a bin).
    """

    def pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        if feature.dtype in (torch.bfloat16, torch.float16):  # float32 rois (pooler_rois): pool in float32
            return roi_pool(feature.float(), rois.float(), self.output_size, scale).to(feature.dtype)
        return roi_pool(feature, rois, self.output_size, scale)


@ROI_POOLERS.register()
class ROIAlign(ROIPooler):
    """Bilinear RoI pooling without the half-pixel shift (``aligned=False``), the original Mask R-CNN op.

    Args:
        sampling_ratio: bilinear samples per bin side; 0 = adaptive ceil(roi_size / output_size).
        (other arguments: see :class:`ROIPooler`)
    """

    aligned: bool = False

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: Sequence[float],
        *,
        sampling_ratio: int = 0,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        super().__init__(output_size, scales, canonical_box_size=canonical_box_size, canonical_level=canonical_level)
        if sampling_ratio < 0:
            raise ConfigError(
                f"{type(self).__name__}: sampling_ratio must be >= 0 (0 = adaptive), got {sampling_ratio}"
            )
        self.sampling_ratio = sampling_ratio

    def pool(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def pool_levels(self, x: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        # every level in one call: on a CPU one sparse product for all of them (parallel_ops)
        return roi_align_levels(x, rois, levels, self.output_size, self.scales, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"


@ROI_POOLERS.register()
class ROIAlignV2(ROIAlign):
    """ROIAlign with ``aligned=True``: box coordinates are shifted by -0.5 pixel so that pixel centres,
    not corners, sit at integer + 0.5 coordinates (detectron2's default for its FPN models)."""

    aligned: bool = True
