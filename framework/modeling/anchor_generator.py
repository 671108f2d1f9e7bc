"""Anchor generators: the reference boxes tiled over every feature level (Faster R-CNN, FPN)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from framework.errors import ConfigError
from framework.layers.shape_spec import ShapeSpec
from framework.registry import ANCHOR_GENERATORS
from framework.structures.boxes import Boxes

__all__ = ["DefaultAnchorGenerator", "generate_cell_anchors"]


def _broadcast_per_level(params: Sequence, num_levels: int, name: str) -> list[list[float]]:
    """One list of values per level: a flat list or a single inner list is repeated on all levels."""
    if not isinstance(params, Sequence) or isinstance(params, str) or len(params) == 0:
        raise ConfigError(f"anchor generator: {name} must be a non-empty list (of lists) of numbers, got {params!r}")
    if not isinstance(params[0], Sequence):  # list[float]: the same values on every level
        return [list(params)] * num_levels
    if len(params) == 1:
        return [list(params[0])] * num_levels
    if len(params) != num_levels:
        raise ConfigError(
            f"anchor generator: {name} has {len(params)} per-level entries {params!r} but the input has "
            f"{num_levels} feature levels; give one entry per level, or a single entry to share"
        )
    return [list(p) for p in params]


def generate_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """The anchors of one feature location, centred at (0, 0): (len(sizes) * len(aspect_ratios), 4) XYXY.

    For size s and ratio a = h / w: area s^2, w = sqrt(s^2 / a), h = a * w. Ordered size-major
    (for each size, for each ratio). Computed in float64 then stored as float32, as detectron2.
    """
    anchors = []
    for size in sizes:
        area = size**2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


@ANCHOR_GENERATORS.register()
class DefaultAnchorGenerator(nn.Module):
    """Axis-aligned anchors of several sizes and aspect ratios at every location of every level.

    Args:
        input_shape: one ShapeSpec per feature level; only ``stride`` is used.
        sizes: per level, anchor sizes (sqrt of area) in input pixels. A single entry (or a flat list)
            is used on every level.
        aspect_ratios: per level, ratios height / width. Same broadcasting as ``sizes``.
        offset: centre of the first anchor relative to the top-left image corner, in strides
            (0 = detectron2 config default, 0.5 = centre of the first cell). In [0, 1).
        round_anchors: round the cell anchors' coordinates to whole pixels, as torchvision's
            AnchorGenerator does (its weights were trained with them).

    Attributes:
        num_anchors: list with the number of anchors per location on each level.
        box_dim: 4 (XYXY).
    """

    box_dim: int = 4

    def __init__(
        self,
        input_shape: list[ShapeSpec],
        *,
        sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
        offset: float = 0.0,
        round_anchors: bool = False,
    ):
        super().__init__()
        strides = [s.stride for s in input_shape]
        if not strides or any(s is None or s <= 0 for s in strides):
            raise ConfigError(f"anchor generator: every input level needs a positive stride, got strides {strides}")
        if not 0.0 <= offset < 1.0:
            raise ConfigError(f"anchor generator: offset must be in [0, 1), got {offset}")
        self.strides = strides
        self.offset = offset
        self.round_anchors = round_anchors
        sizes = _broadcast_per_level(sizes, len(strides), "sizes")
        aspect_ratios = _broadcast_per_level(aspect_ratios, len(strides), "aspect_ratios")
        # Non-persistent: they are derived from the config, so checkpoints neither need nor carry them.
        for i, (s, a) in enumerate(zip(sizes, aspect_ratios)):
            cell = generate_cell_anchors(s, a)
            self.register_buffer(f"cell_anchors_{i}", cell.round() if round_anchors else cell, persistent=False)

    @property
    def cell_anchors(self) -> list[torch.Tensor]:
        """Per level, the (A, 4) anchors of one location, centred at (0, 0)."""
        return [getattr(self, f"cell_anchors_{i}") for i in range(len(self.strides))]

    @property
    def num_anchors(self) -> list[int]:
        """Per level, the number A of anchors at each location."""
        return [len(c) for c in self.cell_anchors]

    @property
    def num_cell_anchors(self) -> list[int]:
        """Alias of :attr:`num_anchors` (detectron2's older name)."""
        return self.num_anchors

    def _grid_anchors(self, grid_sizes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per level, (H * W * A, 4) anchors ordered by (y, x, anchor)."""
        anchors = []
        for (height, width), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors):
            kw = dict(step=stride, dtype=torch.float32, device=cell.device)
            shifts_x = torch.arange(self.offset * stride, width * stride, **kw)
            shifts_y = torch.arange(self.offset * stride, height * stride, **kw)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # row-major: y outer, x inner
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H*W, 4)
            anchors.append((shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4))
        return anchors

    def forward(self, features: list[torch.Tensor]) -> list[Boxes]:
        """Anchors for feature maps ``features`` (one (B, C, Hi, Wi) tensor per level).

        Returns:
            One Boxes per level with Hi * Wi * A anchors in input-image pixels, ordered by
            (y, x, anchor); the same for every image of the batch.
        """
        if len(features) != len(self.strides):
            raise ValueError(
                f"DefaultAnchorGenerator was built for {len(self.strides)} levels (strides {self.strides}) "
                f"but got {len(features)} feature maps"
            )
        grid_sizes = [f.shape[-2:] for f in features]
        return [Boxes(a) for a in self._grid_anchors(grid_sizes)]

    def extra_repr(self) -> str:
        return (
            f"strides={self.strides}, num_anchors={self.num_anchors}, offset={self.offset}, "
            f"round_anchors={self.round_anchors}"
        )
