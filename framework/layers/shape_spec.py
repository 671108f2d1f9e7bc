"""ShapeSpec: what a parent tells a child about the tensors it will receive."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a feature map (or vector) without the batch dimension.

    Attributes:
        channels: number of channels C.
        height, width: spatial size when known (pooled RoI features), else None.
        stride: input pixels per feature pixel (4 for P2, ...), else None.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None
