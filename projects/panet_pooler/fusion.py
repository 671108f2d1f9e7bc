"""Element-wise fusion of the feature grids one RoI gets from each FPN level (PANet's fusion step)."""

from __future__ import annotations

import functools
from typing import Literal, Sequence

import torch

from framework.errors import ConfigError

__all__ = ["Fusion", "FUSIONS", "fuse_levels"]

Fusion = Literal["max", "sum", "mean"]

#: The fusions the paper compares (max, its choice; sum, its ablation) and mean, sum scaled to the
#: magnitude of one level so that a head tuned on single-level features sees the same range.
FUSIONS: tuple[str, ...] = ("max", "sum", "mean")


def fuse_levels(per_level: Sequence[torch.Tensor], fusion: Fusion) -> torch.Tensor:
    """Fuse the L pooled grids of the same RoIs into one.

    Reduced pairwise rather than stacked, so the peak memory is two grids, not L + 1. With ``max``,
    the gradient of each output element goes to the level that won it (split evenly on a tie).

    Args:
        per_level: L >= 1 tensors (R, C, h, w), one per level, the same RoIs in the same order.
        fusion: ``max``, ``sum`` or ``mean`` over the levels.

    Returns:
        (R, C, h, w).
    """
    if fusion not in FUSIONS:
        raise ConfigError(f"fusion={fusion!r} is not one of {list(FUSIONS)}")
    if not per_level:
        raise ValueError("fuse_levels needs the grids of at least one level, got none")
    if fusion == "max":
        return functools.reduce(torch.maximum, per_level)
    total = functools.reduce(torch.add, per_level)
    return total / len(per_level) if fusion == "mean" else total
