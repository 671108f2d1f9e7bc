"""The augmented copies ("views") of one test image, and how boxes move between a view and the original image.

A view is the model's input image resized so that its shorter side is one of the test sizes (the
longer one capped), optionally mirrored left-right: detectron2's ``DatasetMapperTTA``, which, like
this, resizes the image the test pipeline produced, not the file. Boxes are XYXY absolute; the
original image is the ``(height, width)`` the detections are reported at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from framework.layers.resize import resize_image_pil, resize_shortest_edge_shape

__all__ = ["View", "make_views", "view_image", "boxes_to_original", "boxes_to_view"]


@dataclass(frozen=True)
class View:
    """One augmented copy: the image resized to ``size`` = (h, w), then mirrored when ``flip``."""

    size: tuple[int, int]
    flip: bool


def make_views(height: int, width: int, *, min_sizes: Sequence[int], max_size: int, flip: bool) -> list[View]:
    """The views of a (height, width) image, in detectron2's order: per shorter-side size, the
    resized image, then (with ``flip``) its mirror. A size of 0 keeps the image's size."""
    views = []
    for short_edge in min_sizes:
        size = resize_shortest_edge_shape(height, width, int(short_edge), max_size)
        views.append(View(size, False))
        if flip:
            views.append(View(size, True))
    return views


def view_image(image: torch.Tensor, view: View) -> torch.Tensor:
    """The (C, h, w) image of ``view`` from the (C, H, W) model input: a uint8 image is resized as
    the test pipeline resizes (PIL bilinear, :func:`resize_image_pil`), a float one (after
    ``ResizeShortestEdgeTorchvision``) bilinearly without antialiasing, as detectron2 resizes floats."""
    if tuple(image.shape[-2:]) != view.size:
        if image.dtype == torch.uint8:
            image = resize_image_pil(image, view.size)
        else:
            image = F.interpolate(image[None].float(), size=view.size, mode="bilinear", align_corners=False)[0]
    return image.flip(-1) if view.flip else image


def boxes_to_original(boxes: torch.Tensor, view: View, original: tuple[int, int]) -> torch.Tensor:
    """(R, 4) boxes in ``view`` -> in the ``original`` (H, W) image: mirrored back, then scaled by
    W / w and H / h (the scaling plain inference applies, :func:`detector_postprocess`)."""
    h, w = view.size
    if view.flip:
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    scale = boxes.new_tensor([original[1] / w, original[0] / h, original[1] / w, original[0] / h])
    return boxes * scale


def boxes_to_view(boxes: torch.Tensor, view: View, original: tuple[int, int]) -> torch.Tensor:
    """(R, 4) boxes in the ``original`` (H, W) image -> in ``view``: scaled by w / W and h / H, then mirrored."""
    h, w = view.size
    boxes = boxes * boxes.new_tensor([w / original[1], h / original[0], w / original[1], h / original[0]])
    if view.flip:
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    return boxes
