"""Draw ground truth and predictions on images with torchvision.utils (for TensorBoard and demos)."""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from framework.structures import BitMasks, Instances, PolygonMasks

__all__ = ["draw_instances", "draw_labelled", "side_by_side", "to_rgb_uint8"]


def to_rgb_uint8(image: torch.Tensor, input_format: str) -> torch.Tensor:
    """(3, H, W) model input (0-255, ``input_format`` channel order) -> (3, H, W) uint8 RGB."""
    image = image.detach().to("cpu")
    if input_format == "BGR":
        image = image.flip(0)
    return image.clamp(0, 255).to(torch.uint8)


def _masks(instances: Instances, field: str, size: tuple[int, int]) -> torch.Tensor | None:
    if not instances.has(field):
        return None
    masks = instances.get(field)
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *size)
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    masks = masks.to("cpu")
    if masks.dim() == 4:  # (R, 1, M, M) probabilities are not image-sized: skip them
        return None
    return masks.bool()


def draw_instances(
    image: torch.Tensor,
    instances: Instances,
    *,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]] | None = None,
    score_thresh: float = 0.5,
    mask_alpha: float = 0.5,
    label_background: bool = False,
) -> torch.Tensor:
    """Draw boxes, masks and labels of ground truth (``gt_*`` fields) or predictions (``pred_*``).

    Args:
        image: (3, H, W) uint8 RGB.
        instances: with ``gt_boxes``/``gt_classes``/``gt_masks`` or ``pred_boxes``/``pred_classes``/
            ``scores``/``pred_masks`` (R, H, W); predictions below ``score_thresh`` are not drawn.
        label_background: black labels on a box-coloured background (legible over busy images and
            masks) instead of box-coloured text.
    Returns:
        (3, H, W) uint8 RGB.
    """
    instances = instances.to("cpu")
    prefix = "pred" if instances.has("pred_boxes") else "gt"
    if prefix == "pred" and instances.has("scores"):
        instances = instances[instances.scores >= score_thresh]
    if len(instances) == 0:
        return image
    classes = instances.get(f"{prefix}_classes").tolist()
    palette = list(colors) if colors else None
    inst_colors = [tuple(int(c) for c in palette[k % len(palette)]) for k in classes] if palette else None
    size = (image.shape[-2], image.shape[-1])
    masks = _masks(instances, f"{prefix}_masks", size)
    labels = [class_names[k] if 0 <= k < len(class_names) else str(k) for k in classes]
    if prefix == "pred" and instances.has("scores"):
        labels = [f"{name} {s:.0%}" for name, s in zip(labels, instances.scores.tolist())]
    boxes = instances.get(f"{prefix}_boxes").tensor
    return draw_labelled(image, boxes, labels=labels, colors=inst_colors, masks=masks, mask_alpha=mask_alpha,
                         label_background=label_background)


def draw_labelled(
    image: torch.Tensor,
    boxes: torch.Tensor,
    *,
    labels: Sequence[str],
    colors: Sequence[tuple[int, int, int]] | None = None,
    masks: torch.Tensor | None = None,
    mask_alpha: float = 0.5,
    width: int = 2,
    label_background: bool = False,
) -> torch.Tensor:
    """Draw N boxes with their labels, and their masks when given (torchvision.utils).

    Args:
        image: (3, H, W) uint8 RGB.
        boxes: (N, 4) XYXY absolute.
        labels: N strings; colors: N RGB tuples (``None``: torchvision's palette).
        masks: (N, H, W) bool, or ``None``; masks of another size than the image are not drawn.
    Returns:
        (3, H, W) uint8 RGB.
    """
    if len(boxes) == 0:
        return image
    size = (image.shape[-2], image.shape[-1])
    if masks is not None and len(masks) and masks.shape[-2:] == size:
        image = draw_segmentation_masks(image, masks.bool(), alpha=mask_alpha, colors=list(colors) if colors else None)
    return draw_bounding_boxes(image, boxes.float(), labels=list(labels), colors=list(colors) if colors else None,
                               width=width, fill_labels=label_background)


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int = 4) -> torch.Tensor:
    """Concatenate two (3, H, W) uint8 images horizontally with a white gap, padding heights."""
    h = max(left.shape[1], right.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 0, h - x.shape[1]), value=255)  # noqa: E731
    sep = torch.full((3, h, gap), 255, dtype=torch.uint8)
    return torch.cat([pad(left), sep, pad(right)], dim=2)
