"""The MaskIoU loss and the inference-time rescoring, as plain functions (like mask_rcnn_loss / _inference)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.structures import Instances, split_by_image
from framework.structures.size_checks import known_true

__all__ = ["maskiou_loss", "maskiou_rescore", "select_class"]


def select_class(per_class: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Row r's entry for ``classes[r]``: (R, K, ...) -> (R, ...); a class-agnostic (R, 1, ...) gives channel 0."""
    if per_class.size(1) == 1:
        return per_class[:, 0]
    rows = torch.arange(per_class.size(0), device=per_class.device)
    return per_class[rows, classes.to(device=per_class.device, dtype=torch.long)]


def maskiou_loss(pred_maskiou: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L2 loss ``0.5 * mean((pred - target)^2)`` over the foreground RoIs.

    The 0.5 is the paper's code (l2_loss) and mmdetection's (MSELoss, weight 0.5), so a loss weight
    of 1 is the paper's setting. Targets are detached: the IoU of a mask is data, not a path for
    gradients into the mask it measures.

    Args:
        pred_maskiou: (R,) predicted IoU for each RoI's gt class.
        targets: (R,) IoU targets.
    Returns:
        scalar (0 connected to the graph when R = 0).
    """
    if pred_maskiou.numel() == 0:
        return pred_maskiou.sum() * 0
    return 0.5 * torch.mean((pred_maskiou - targets.detach().to(pred_maskiou)) ** 2)


def maskiou_rescore(pred_maskiou: torch.Tensor, instances: Sequence[Instances]) -> None:
    """Rank detections by mask quality: ``scores = det_scores * mask_iou``, in place per image.

    Sets ``det_scores`` (the classification score the box branch gave), ``mask_iou`` (the
    predicted IoU, clamped to [0, 1]: a regression output outside it is not an IoU) and replaces
    ``scores`` by their product, which the evaluator ranks by.

    Args:
        pred_maskiou: (R,) predicted IoU of each detection for its predicted class, R = total
            detections of ``instances`` in order.
    """
    # Counts as the instances' own (possibly symbolic) lengths, not the builtin len, so that
    # torch.export can record this; the check raises only when a mismatch is certain.
    total = sum(i.__len__() for i in instances)
    if known_true(pred_maskiou.numel() != total):
        raise ValueError(f"maskiou_rescore: {pred_maskiou.numel()} IoUs for {total} detections")
    for iou, inst in zip(split_by_image(pred_maskiou, instances), instances):
        iou = iou.clamp(0.0, 1.0).to(inst.scores.dtype)
        inst.det_scores = inst.scores
        inst.mask_iou = iou
        inst.scores = inst.det_scores * iou
