"""The MaskIoU regression target: IoU of the binarised predicted mask with its matched gt mask.

Both masks live on the RoI's M x M grid, which sees only the gt inside the proposal box. With
``full_gt_area`` the gt's area is that of the whole instance (as the paper and mmdetection):
(gt area on the grid) / (fraction of the gt inside the box), so a mask that is perfect inside a box
which cuts off part of the object still gets an IoU below 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.structures import Instances
from projects.mask_scoring_rcnn.mask_areas import mask_area_in_boxes

__all__ = ["mask_iou_on_grid", "maskiou_targets"]


def mask_iou_on_grid(
    pred_masks: torch.Tensor, gt_masks: torch.Tensor, area_ratio: torch.Tensor | None = None
) -> torch.Tensor:
    """IoU of binary masks on the same (M, M) RoI grid.

    Args:
        pred_masks, gt_masks: (R, M, M) of 0/1 (any dtype).
        area_ratio: (R,) fraction of each gt instance that lies inside its RoI, in (0, 1]; the gt area
            becomes (gt area on the grid) / ratio. None: the gt counts only inside the RoI.
    Returns:
        (R,) float32 in [0, 1]; the union is at least one grid cell, so two empty masks give 0.
    """
    pred, gt = pred_masks.float(), gt_masks.float()
    overlap = (pred * gt).sum(dim=(1, 2))
    gt_area = gt.sum(dim=(1, 2))
    if area_ratio is not None:
        gt_area = gt_area / area_ratio.to(gt_area).clamp(1e-6, 1.0)
    union = (pred.sum(dim=(1, 2)) + gt_area - overlap).clamp(min=1.0)
    return (overlap / union).clamp(0.0, 1.0)


@torch.no_grad()
def maskiou_targets(
    pred_mask_logits: torch.Tensor,
    instances: Sequence[Instances],
    *,
    mask_thresh: float = 0.5,
    full_gt_area: bool = True,
) -> torch.Tensor:
    """MaskIoU targets of the foreground proposals; never part of the graph.

    Args:
        pred_mask_logits: (R, M, M) logits of each proposal's gt class, R = total proposals of
            ``instances`` in order.
        instances: per image, foreground proposals with ``proposal_boxes`` and ``gt_masks`` (the
            matched gt's mask, BitMasks or PolygonMasks).
        mask_thresh: probability above which a predicted pixel is foreground.
        full_gt_area: measure the gt over the whole instance (True) or only inside the box.
    Returns:
        (R,) float32 targets in [0, 1].
    """
    side = pred_mask_logits.size(-1)
    gt, ratios = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        boxes = inst.proposal_boxes.tensor
        gt.append(inst.gt_masks.crop_and_resize(boxes, side).to(pred_mask_logits.device))
        if full_gt_area:
            full = inst.gt_masks.area().to(device=boxes.device, dtype=torch.float32)
            ratios.append(mask_area_in_boxes(inst.gt_masks, boxes) / full.clamp(min=1e-6))
    if not gt:
        return pred_mask_logits.new_zeros(0)
    gt_masks = torch.cat(gt)
    if gt_masks.size(0) != pred_mask_logits.size(0):
        raise ValueError(f"maskiou_targets: {pred_mask_logits.size(0)} predicted masks for {gt_masks.size(0)} proposals")
    ratio = torch.cat(ratios).to(pred_mask_logits.device) if full_gt_area else None
    return mask_iou_on_grid(pred_mask_logits.detach().sigmoid() > mask_thresh, gt_masks, ratio)
