"""Mask pasting as graph operations: every detection's M x M mask at its box, for any number of boxes.

The eager pasting (:func:`framework.layers.mask_ops.paste_masks_in_image`) loops over detections
on a CPU, reading box coordinates as Python numbers; a graph needs the same result from tensor
operations. Bilinear sampling of a mask at pixel centres is separable, so the soft masks are two
batched matrix products ``Ry @ mask @ Rx^T`` with ``Ry`` (N, H, M) and ``Rx`` (N, W, M) holding the
bilinear weights of each image row / column, which also keeps the memory at the (N, H, W) output
instead of grid_sample's (N, H, W, 2) grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["paste_masks_detectron2"]


def _axis_weights(start: Tensor, end: Tensor, size, mask_size: int, limit: Tensor) -> Tensor:
    """Bilinear weights of the mask cells for every pixel of one image axis, per box.

    Pixel p (centre p + 0.5) sits at ``u = ((p + 0.5 - start) / (end - start) * 2 - 1 + 1) * M / 2
    - 1/2`` in mask-cell coordinates (``grid_sample``'s unnormalisation, align_corners=False); mask
    cell a gets ``max(0, 1 - |u - a|)``, which is zero outside the mask (zero padding). As the eager
    CPU path, only pixels within one pixel of the box (``[floor(start) - 1, ceil(end) + 1)``,
    clipped to the image) are sampled; the others stay zero.

    Args:
        start, end: (N,) box sides on this axis (x0, x1 or y0, y1); size: the image's side
            (int or symbolic size); limit: the same as a 0-d float32 tensor.
    Returns:
        (N, size, M) float32 weights.
    """
    pixels = torch.arange(size, dtype=torch.float32)  # (S,)
    rel = ((pixels[None, :] + 0.5) - start[:, None]) / (end - start)[:, None] * 2 - 1  # (N, S)
    u = ((rel + 1) * mask_size - 1) / 2
    cells = torch.arange(mask_size, dtype=torch.float32)
    weights = torch.clamp(1 - (u[:, :, None] - cells[None, None, :]).abs(), min=0.0)  # (N, S, M)
    lo = torch.clamp(torch.floor(start) - 1, min=0.0)
    hi = torch.maximum(torch.minimum(torch.ceil(end) + 1, limit), lo)
    inside = (pixels[None, :] >= lo[:, None]) & (pixels[None, :] < hi[:, None])
    return weights * inside[:, :, None].to(weights.dtype)


def paste_masks_detectron2(masks: Tensor, boxes: Tensor, height, width, height_f: Tensor, width_f: Tensor,
                           *, threshold: float) -> Tensor:
    """Paste (N, M, M) mask probabilities at (N, 4) XYXY boxes into (N, height, width) uint8 masks (0/1).

    The rule of :func:`framework.layers.mask_ops.paste_masks_in_image` (mask cells spanning the box,
    bilinear at pixel centres, foreground where the value >= ``threshold``); the products are summed
    in another order than ``grid_sample``'s, so a pixel whose value is within float rounding of the
    threshold can differ (tests/export check the mask IoU per detection).

    Args:
        height, width: the output size (ints or symbolic sizes); height_f, width_f: the same as
            0-d float32 tensors.
    """
    m = masks.shape[-1]
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    ry = _axis_weights(y0, y1, height, m, height_f)  # (N, H, M)
    rx = _axis_weights(x0, x1, width, m, width_f)    # (N, W, M)
    soft = torch.matmul(torch.matmul(ry, masks.to(torch.float32)), rx.transpose(1, 2))  # (N, H, W)
    return (soft >= threshold).to(torch.uint8)
