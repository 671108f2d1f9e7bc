"""Map detections from the network's input resolution back to the original image size."""

from __future__ import annotations

from typing import Literal

from framework.layers.mask_ops import MASK_PASTERS
from framework.structures import Boxes, Instances

__all__ = ["detector_postprocess"]


def detector_postprocess(
    results: Instances,
    output_height: int,
    output_width: int,
    *,
    mask_threshold: float = 0.5,
    mask_paste: Literal["detectron2", "torchvision"] = "detectron2",
) -> Instances:
    """Rescale boxes to ``(output_height, output_width)``, clip, drop empty boxes, paste masks.

    Args:
        results: detections at the resized input resolution ``results.image_size``, with
            ``pred_boxes`` (or ``proposal_boxes`` for RPN-only outputs) and optionally
            ``pred_masks`` (R, 1, M, M) probabilities.
        output_height, output_width: the original image size.
        mask_threshold: probability above which a pasted mask pixel is foreground.
        mask_paste: how masks are resampled into the image (see :data:`framework.layers.mask_ops.MASK_PASTERS`).
    Returns:
        Instances of size (output_height, output_width); ``pred_masks`` becomes (R, H, W) bool.
    """
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    out = Instances((output_height, output_width), **results.get_fields())
    # RPN-only outputs carry proposal_boxes instead of pred_boxes (as detectron2 handles them)
    box_field = next((f for f in ("pred_boxes", "proposal_boxes") if out.has(f)), None)
    if box_field is None:
        raise ValueError(
            f"detector_postprocess needs 'pred_boxes' or 'proposal_boxes'; fields are {list(out.get_fields())}"
        )
    boxes: Boxes = out.get(box_field)
    boxes.scale(scale_x, scale_y)
    boxes.clip(out.image_size)
    out = out[boxes.nonempty()]
    if out.has("pred_masks"):
        masks = out.pred_masks
        if masks.dim() == 4:
            masks = masks[:, 0]
        out.pred_masks = MASK_PASTERS[mask_paste](masks, out.get(box_field), out.image_size, threshold=mask_threshold)
    return out
