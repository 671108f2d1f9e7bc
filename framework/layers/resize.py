"""Image resizes the data pipelines and test-time augmentation share: detectron2's shortest-edge
shape and its uint8 PIL bilinear resize, and torchvision's detection resize (shortest edge to a
size, longest edge capped, float bilinear)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = ["resize_image_pil", "resize_shortest_edge_shape", "resize_shortest_edge_torchvision"]


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


def resize_image_pil(image: torch.Tensor, new_size: tuple[int, int]) -> torch.Tensor:
    """Resize a (C, H, W) uint8 image to ``new_size`` = (new_h, new_w), bilinear, as detectron2 does.

    The resize runs on a PIL image (``F.resize`` dispatches to PIL's resampler): torch's
    antialiased bilinear kernel differs from PIL's by 1-2 levels on a few percent of the pixels,
    and a model-zoo checkpoint must see the very same pixels. Same size: returned unchanged.

    Returns:
        (C, new_h, new_w) uint8 tensor.
    """
    if tuple(image.shape[-2:]) == tuple(new_size):
        return image
    if image.dtype != torch.uint8:
        raise TypeError(f"resize_image_pil resizes uint8 images (PIL), got {image.dtype}; a float image was resized "
                        "before (e.g. by ResizeShortestEdgeTorchvision): resize it with torch instead")
    resized = TF.resize(TF.to_pil_image(image), list(new_size), interpolation=InterpolationMode.BILINEAR)
    return TF.pil_to_tensor(resized)
