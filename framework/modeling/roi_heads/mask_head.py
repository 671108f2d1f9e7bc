"""Mask heads: pooled RoI features -> per-class mask logits; the mask loss and inference as functions.

Write a new head by subclassing :class:`BaseMaskRCNNHead` and overriding ``layers()`` only: the loss
and inference come with the base class.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from framework.layers import Conv2d, ShapeSpec, get_norm
from framework.registry import MASK_HEADS
from framework.structures import Instances, split_by_image
from framework.utils.events import put_scalars

__all__ = ["BaseMaskRCNNHead", "MaskRCNNConvUpsampleHead", "mask_rcnn_loss", "mask_rcnn_inference"]


def mask_rcnn_loss(pred_mask_logits: torch.Tensor, instances: Sequence[Instances]) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy between predicted masks and gt masks cut to the proposals.

    Args:
        pred_mask_logits: (R, K, M, M) class-specific, or (R, 1, M, M) class-agnostic; R = total
            foreground proposals of ``instances`` in order.
        instances: per image, with ``proposal_boxes``, ``gt_classes`` and ``gt_masks`` (BitMasks or
            PolygonMasks, one per proposal: the mask of its matched gt).
    Returns:
        scalar loss (0 connected to the graph when there is no foreground).
    """
    agnostic = pred_mask_logits.size(1) == 1
    side = pred_mask_logits.size(2)
    if pred_mask_logits.size(2) != pred_mask_logits.size(3):
        raise ValueError(f"mask predictions must be square, got {tuple(pred_mask_logits.shape)}")
    gt_classes, gt_masks = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        if not agnostic:
            gt_classes.append(inst.gt_classes.to(dtype=torch.int64))
        gt_masks.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, side).to(pred_mask_logits.device))
    if not gt_masks:
        return pred_mask_logits.sum() * 0
    targets = torch.cat(gt_masks, dim=0)
    if agnostic:
        logits = pred_mask_logits[:, 0]
    else:
        rows = torch.arange(pred_mask_logits.size(0), device=pred_mask_logits.device)
        logits = pred_mask_logits[rows, torch.cat(gt_classes).to(pred_mask_logits.device)]
    target_bool = targets > 0.5 if targets.dtype != torch.bool else targets
    targets = targets.to(dtype=torch.float32)
    wrong = (logits > 0.0) != target_bool
    num_pos = target_bool.sum().item()
    put_scalars(
        **{
            "mask_rcnn/accuracy": 1 - wrong.sum().item() / max(wrong.numel(), 1.0),
            "mask_rcnn/false_positive": (wrong & ~target_bool).sum().item() / max(target_bool.numel() - num_pos, 1.0),
            "mask_rcnn/false_negative": (wrong & target_bool).sum().item() / max(num_pos, 1.0),
        }
    )
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")


def mask_rcnn_inference(pred_mask_logits: torch.Tensor, pred_instances: Sequence[Instances]) -> None:
    """Set ``pred_masks`` (Ri, 1, M, M) probabilities on each image's instances, for its predicted class.

    Args:
        pred_mask_logits: (R, K or 1, M, M), R = total detections of ``pred_instances`` in order.
    """
    if pred_mask_logits.size(1) == 1:
        probs = pred_mask_logits.sigmoid()
    else:
        classes = torch.cat([i.pred_classes for i in pred_instances]) if pred_instances else pred_mask_logits.new_zeros(0, dtype=torch.long)
        probs = pred_mask_logits[torch.arange(pred_mask_logits.size(0), device=classes.device), classes][:, None].sigmoid()
    for p, inst in zip(split_by_image(probs, pred_instances), pred_instances):
        inst.pred_masks = p


class BaseMaskRCNNHead(nn.Module):
    """Base of Mask R-CNN mask heads: subclasses implement :meth:`layers`.

    Knobs shared by every subclass: ``loss_weight`` (multiplier of ``loss_mask``).
    """

    def __init__(self, *, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) pooled features -> (R, K or 1, M, M) mask logits."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, instances: list[Instances]) -> dict[str, torch.Tensor] | list[Instances]:
        """Training: ``{"loss_mask": ...}`` for proposals with gt; inference: ``instances`` with ``pred_masks``."""
        logits = self.layers(x)
        if self.training:
            return {"loss_mask": mask_rcnn_loss(logits, instances) * self.loss_weight}
        mask_rcnn_inference(logits, instances)
        return instances


@MASK_HEADS.register()
class MaskRCNNConvUpsampleHead(BaseMaskRCNNHead):
    """``num_conv`` 3x3 convs, a 2x2 stride-2 deconv, and a 1x1 predictor (Mask R-CNN's FPN mask head).

    Runtime args: input_shape (channels C of the pooled features), num_classes K.
    Input (R, C, 14, 14) -> logits (R, K, 28, 28) (or (R, 1, 28, 28) with ``cls_agnostic_mask``).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        num_classes: int,
        *,
        num_conv: int = 4,
        conv_dim: int = 256,
        norm: Literal["", "BN", "FrozenBN", "GN", "SyncBN"] = "",
        cls_agnostic_mask: bool = False,
        loss_weight: float = 1.0,
    ):
        super().__init__(loss_weight=loss_weight)
        cur = input_shape.channels
        self.mask_fcns = []
        for k in range(num_conv):
            conv = Conv2d(cur, conv_dim, 3, padding=1, bias=not norm, norm=get_norm(norm, conv_dim), activation=nn.ReLU(inplace=True))
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.mask_fcns.append(conv)
            cur = conv_dim
        self.deconv = nn.ConvTranspose2d(cur, conv_dim, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, 1 if cls_agnostic_mask else num_classes, kernel_size=1)
        for layer in self.mask_fcns + [self.deconv]:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.mask_fcns:
            x = conv(x)
        return self.predictor(F.relu_(self.deconv(x)))
