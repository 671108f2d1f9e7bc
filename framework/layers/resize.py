"""torchvision's detection resize: shortest edge to a size, longest edge capped, float bilinear."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_shortest_edge_torchvision"]


def resize_shortest_edge_torchvision(image: torch.Tensor, short_edge: int, max_size: int) -> torch.Tensor:
    """Resize a (C, H, W) image as torchvision's ``GeneralizedRCNNTransform`` does inside its models.

    The scale is ``min(short_edge / min(H, W), max_size / max(H, W))`` and the output has
    ``floor(H * scale) x floor(W * scale)`` pixels, interpolated bilinearly from the float image
    (no antialiasing, ``align_corners=False``) and left unrounded. detectron2 instead rounds the
    sides half up and resizes the uint8 image with PIL. ``short_edge == 0``: no resize.

    Returns:
        (C, H', W') float32 tensor (float64 stays float64).
    """
    if not image.dtype.is_floating_point:
        image = image.to(torch.float32)
    if short_edge == 0:
        return image
    h, w = int(image.shape[-2]), int(image.shape[-1])
    scale = min(short_edge / min(h, w), max_size / max(h, w))
    # scale_factor + recompute_scale_factor, exactly as torchvision calls it, so sizes agree to the pixel
    return F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)[0]
