"""Box regression losses, re-exported from fvcore / torchvision so every head imports them from one place.

All take boxes or deltas of shape (N, 4) (or (4,)) and ``reduction`` in ``"none" | "mean" | "sum"``:

* :func:`smooth_l1_loss` (fvcore): Huber-style loss on deltas; ``beta < 1e-5`` gives plain L1,
  which is what detectron2 uses by default (``smooth_l1_beta=0``).
* :func:`giou_loss` (fvcore): 1 - generalised IoU, on XYXY boxes.
* :func:`diou_loss`, :func:`ciou_loss` (torchvision): distance / complete IoU losses, on XYXY boxes.
  They compute the same expressions as detectron2's ``layers/losses.py`` (same eps placement).
"""

from __future__ import annotations

import torch
from fvcore.nn import giou_loss, smooth_l1_loss
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss

__all__ = ["smooth_l1_loss", "giou_loss", "diou_loss", "ciou_loss"]


def diou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """Distance-IoU loss (Zheng et al. 2020) between paired XYXY boxes (N, 4): 1 - IoU + d^2 / c^2."""
    return distance_box_iou_loss(boxes1, boxes2, reduction=reduction, eps=eps)


def ciou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7) -> torch.Tensor:
    """Complete-IoU loss (Zheng et al. 2020) between paired XYXY boxes (N, 4): DIoU + aspect-ratio term."""
    return complete_box_iou_loss(boxes1, boxes2, reduction=reduction, eps=eps)
