"""Pooling RoIs from the levels of a feature pyramid, one level at a time."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from framework.layers.memory_format import is_channels_last

__all__ = ["pool_by_level"]


def pool_by_level(features: Sequence[Tensor], rois: Tensor, levels: Tensor, output_size: tuple[int, int],
                  pool: Callable[[int, Tensor], Tensor]) -> Tensor:
    """Each RoI pooled from its level by ``pool(level, rois_of_that_level)``, one call per level.

    Every level is called, with zero RoIs too (an op returning (0, C, h, w)), so that the output
    stays connected to every feature map's graph, as in detectron2.

    Args:
        features: one (N, C, H_l, W_l) map per level.
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)``.
        levels: (K,) int64 index into ``features`` per RoI.
        output_size: (out_h, out_w) that ``pool`` gives.
        pool: ``(level, (k, 5) rois) -> (k, C, out_h, out_w)``.

    Returns:
        (K, C, out_h, out_w), RoIs in ``rois``' order, in the memory format of ``features[0]``.
    """
    memory_format = torch.channels_last if is_channels_last(features[0]) else torch.contiguous_format
    output = torch.empty((rois.shape[0], features[0].shape[1], *output_size), dtype=features[0].dtype,
                         device=features[0].device, memory_format=memory_format).zero_()
    for level in range(len(features)):
        inds = torch.nonzero(levels == level, as_tuple=True)[0]
        # index_put_ rather than output[inds] = ...: keeps autograd/tracing happy with empty inds
        output.index_put_((inds,), pool(level, rois[inds]))
    return output
