"""Mask pasting as graph operations: every detection's M x M mask at its box, for any number of boxes.

The eager pasting (:func:`framework.layers.mask_ops.paste_masks_in_image`) loops over detections
on a CPU, reading box coordinates as Python numbers; a graph needs the same result from tensor
operations. Bilinear sampling of a mask at pixel centres is separable, so the soft masks are two
batched matrix products ``Ry @ mask @ Rx^T`` with ``Ry`` (N, H, M) and ``Rx`` (N, W, M) holding the
bilinear weights of each image row / column, which also keeps the memory at the (N, H, W) output
instead of grid_sample's (N, H, W, 2) grid. Two rules, by the name of the models' ``mask_paste``
knob (:data:`GRAPH_MASK_PASTERS`): detectron2's and torchvision's.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GRAPH_MASK_PASTERS", "paste_masks_detectron2", "paste_masks_torchvision"]


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


def _torchvision_axis_weights(start: Tensor, end: Tensor, size, mask_size: int) -> Tensor:
    """Weights of the mask cells for every pixel of one image axis, per box, as
    ``F.interpolate(bilinear, align_corners=False)`` resizes the zero-padded mask (M + 2 cells) to
    the ``end - start + 1`` pixels from ``start`` to ``end``.

    Pixel p has local index j = p - start in an output of w = end - start + 1 pixels and reads the
    padded mask at src = (j + 0.5) * (M + 2) / w - 0.5 (torch's source index, in float32 in the
    same order), clamped to [0, M + 1] (torch clamps a negative src to 0, and its upper neighbour
    index to M + 1, which weighs as clamping src there); padded cell a gets ``max(0, 1 - |src - a|)``.
    The two padding cells are zero, so only the M inner cells' weights are returned (their products
    with the padding are exact zeros). Pixels outside ``[start, end]`` get no weight.

    Args:
        start, end: (N,) int64 pixel sides of the grown, truncated boxes (inclusive end).
        size: the image's side (int or symbolic size).
    Returns:
        (N, size, M) float32 weights.
    """
    pixels = torch.arange(size, dtype=torch.int64)  # (S,)
    extent = torch.clamp(end - start + 1, min=1).to(torch.float32)  # (N,): an empty box reads nothing
    # tensor over tensor: torch computes a number over a tensor as number * (1 / tensor), not as
    # its kernel's (float) in / out
    scale = torch.full_like(extent, float(mask_size + 2)) / extent
    local = (pixels[None, :] - start[:, None]).to(torch.float32)  # (N, S), exact integers
    src = torch.clamp(scale[:, None] * (local + 0.5) - 0.5, min=0.0, max=float(mask_size + 1))
    cells = torch.arange(1, mask_size + 1, dtype=torch.float32)  # the inner cells' padded indices
    weights = torch.clamp(1 - (src[:, :, None] - cells[None, None, :]).abs(), min=0.0)  # (N, S, M)
    inside = (pixels[None, :] >= start[:, None]) & (pixels[None, :] <= end[:, None])
    return weights * inside[:, :, None].to(weights.dtype)


def paste_masks_torchvision(masks: Tensor, boxes: Tensor, height, width, height_f: Tensor, width_f: Tensor,
                            *, threshold: float) -> Tensor:
    """Paste (N, M, M) mask probabilities at (N, 4) XYXY boxes into (N, height, width) uint8 masks
    (0/1) by torchvision's rule (:func:`framework.layers.mask_ops.paste_masks_in_image_torchvision`).

    The mask is padded by one zero cell on every side and its box grown by (M + 2) / M about its
    centre, truncated to int64 pixels (the same float32 operations as the eager code); the padded
    mask is resized bilinearly (``align_corners=False``) onto the grown box's pixels, kept where
    they lie in the image, and thresholded (``>= threshold``). The resize is separable, so it is
    ``Ry @ mask @ Rx^T`` (:func:`_torchvision_axis_weights`); its sums run in another order than
    torch's kernel, so a pixel whose value is within float rounding of the threshold can differ.

    Args:
        height, width: the output size (ints or symbolic sizes). ``height_f``, ``width_f`` (the
            same as 0-d tensors) are unused: this rule never reads past the grown box, which the
            pixel indices already bound; they keep the signature of :func:`paste_masks_detectron2`.
    """
    del height_f, width_f
    m = masks.shape[-1]
    scale = float(m + 2) / m
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    grown = torch.cat([centre - half, centre + half], dim=1).to(torch.int64)  # truncation, as torchvision
    x0, y0, x1, y1 = grown.unbind(dim=1)
    ry = _torchvision_axis_weights(y0, y1, height, m)  # (N, H, M)
    rx = _torchvision_axis_weights(x0, x1, width, m)   # (N, W, M)
    soft = torch.matmul(torch.matmul(ry, masks.to(torch.float32)), rx.transpose(1, 2))  # (N, H, W)
    return (soft >= threshold).to(torch.uint8)


#: The mask pasting rules written as graph operations, by the models' ``mask_paste`` name
#: (the eager ones are :data:`framework.layers.mask_ops.MASK_PASTERS`).
GRAPH_MASK_PASTERS = {"detectron2": paste_masks_detectron2, "torchvision": paste_masks_torchvision}
