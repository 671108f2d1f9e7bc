"""MaskIoUHead: regresses, per class, the IoU of a RoI's predicted mask with its ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from framework.layers import ShapeSpec

__all__ = ["MaskIoUHead"]


class MaskIoUHead(nn.Module):
    """``num_conv`` 3x3 convs (the last with stride 2), ``num_fc`` FCs of ``fc_dim``, one linear per class.

    The input is the mask branch's pooled RoI feature concatenated with the RoI's predicted mask
    probabilities, max-pooled to the feature's size: the head judges a mask by looking at both the
    mask and the evidence it was predicted from. Built by :class:`MaskScoringROIHeads`, whose
    ``maskiou_*`` knobs these arguments are (as the box predictor's are the RoI heads' knobs).

    Args:
        input_shape: the pooled feature (C, S, S).
        num_classes: K; one IoU per class, the caller reads the RoI's class.
    Shapes: features (R, C, S, S), mask_logits (R, 1, M, M) -> (R, K).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        num_classes: int,
        *,
        num_conv: int = 4,
        conv_dim: int = 256,
        num_fc: int = 2,
        fc_dim: int = 1024,
    ):
        super().__init__()
        if num_conv < 1:
            raise ValueError(f"MaskIoUHead: maskiou_num_conv must be >= 1 (the last conv halves the grid), got {num_conv}")
        side = input_shape.height
        if side is None or input_shape.width != side:
            raise ValueError(f"MaskIoUHead needs a square pooled feature (C, S, S), got {input_shape}")
        convs, cur = [], input_shape.channels + 1
        for k in range(num_conv):
            stride = 2 if k == num_conv - 1 else 1
            convs += [nn.Conv2d(cur, conv_dim, 3, stride=stride, padding=1), nn.ReLU()]
            cur = conv_dim
        self.convs = nn.Sequential(*convs)
        out_side = (side + 1) // 2  # 3x3, padding 1, stride 2
        fcs, cur = [], conv_dim * out_side * out_side
        for _ in range(num_fc):
            fcs += [nn.Linear(cur, fc_dim), nn.ReLU()]
            cur = fc_dim
        self.fcs = nn.Sequential(*fcs)
        self.predictor = nn.Linear(cur, num_classes)
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                weight_init.c2_msra_fill(m)
        for m in self.fcs:
            if isinstance(m, nn.Linear):
                weight_init.c2_xavier_fill(m)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) features, (R, 1, M, M) logits of the RoI's class -> (R, K) predicted IoUs."""
        # M = 2S for the usual heads: a 2x2 max pool, written adaptively so other mask sizes work too.
        mask = F.adaptive_max_pool2d(mask_logits.sigmoid(), features.shape[-2:])
        x = self.convs(torch.cat([features, mask.to(features.dtype)], dim=1))
        return self.predictor(self.fcs(x.flatten(1)))
