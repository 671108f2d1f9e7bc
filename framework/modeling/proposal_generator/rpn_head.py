"""RPN heads: per-level objectness logits and anchor deltas from FPN features."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from framework.layers import Conv2d, ShapeSpec
from framework.layers.amp import float32_layers
from framework.registry import RPN_HEADS

__all__ = ["StandardRPNHead"]


@RPN_HEADS.register()
class StandardRPNHead(nn.Module):
    """Faster R-CNN's RPN head, shared across levels: 3x3 conv(s) + ReLU, then two sibling 1x1 convs.

    Runtime args (from the RPN):
        input_shape: one ShapeSpec per input level; all must have the same channel count C.
        num_anchors: anchors per location A (same on every level).
        box_dim: 4.
    Knobs:
        conv_dims: output channels of each hidden 3x3 conv; -1 means "same as input" (detectron2).
    """

    def __init__(self, input_shape: Sequence[ShapeSpec], num_anchors: int, box_dim: int = 4, *, conv_dims: Sequence[int] = (-1,)):
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"StandardRPNHead needs the same channels on every level, got {sorted(channels)}")
        in_channels = channels.pop()
        if len(conv_dims) == 1:
            out = in_channels if conv_dims[0] == -1 else conv_dims[0]
            # A single conv is named "conv", as in detectron2 checkpoints.
            self.conv: nn.Module = Conv2d(in_channels, out, 3, padding=1, activation=nn.ReLU(inplace=True))
            cur = out
        else:
            self.conv = nn.Sequential()
            cur = in_channels
            for k, dim in enumerate(conv_dims):
                dim = cur if dim == -1 else dim
                if dim <= 0:
                    raise ValueError(f"StandardRPNHead: conv_dims must be positive or -1, got {list(conv_dims)}")
                self.conv.add_module(f"conv{k}", Conv2d(cur, dim, 3, padding=1, activation=nn.ReLU(inplace=True)))
                cur = dim
        self.objectness_logits = nn.Conv2d(cur, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(cur, num_anchors * box_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            features: per level (N, C, Hi, Wi).
        Returns:
            objectness logits per level (N, A, Hi, Wi) and anchor deltas per level (N, A*4, Hi, Wi).
        """
        logits, deltas = [], []
        for x in features:
            t = self.conv(x)
            # float32 under autocast: top-k over every anchor, NMS and box decoding read them
            level_logits, level_deltas = float32_layers(t, self.objectness_logits, self.anchor_deltas)
            logits.append(level_logits)
            deltas.append(level_deltas)
        return logits, deltas
