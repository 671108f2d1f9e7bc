"""PointRend's coarse mask head: convs and FCs predict a low-resolution mask per class (detectron2's ConvFCHead)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from framework.layers import Conv2d, ShapeSpec

__all__ = ["CoarseMaskHead"]


class CoarseMaskHead(nn.Module):
    """A 1x1 conv down to ``conv_dim`` channels (only when the input is wider), a 2x2 stride-2 conv to
    ``conv_dim``, ``num_fc`` FCs of ``fc_dim``, and a linear layer to K x side x side logits.

    Parameter names are detectron2's (``reduce_channel_dim_conv``, ``reduce_spatial_dim_conv``,
    ``fc{k}``, ``prediction``). Shapes: (R, C, S, S) -> (R, K, side, side).
    """

    def __init__(self, input_shape: ShapeSpec, num_classes: int, *, conv_dim: int, fc_dim: int, num_fc: int, side: int):
        super().__init__()
        self.output_shape = (num_classes, side, side)
        convs = []
        channels = input_shape.channels
        if channels > conv_dim:
            self.reduce_channel_dim_conv = Conv2d(channels, conv_dim, 1, activation=nn.ReLU())
            convs.append(self.reduce_channel_dim_conv)
            channels = conv_dim
        # detectron2 builds this conv for conv_dim inputs (and fails on narrower features); taking the
        # input's width gives the same layer whenever detectron2's works, and works on narrow FPNs too
        self.reduce_spatial_dim_conv = Conv2d(channels, conv_dim, 2, stride=2, activation=nn.ReLU())
        convs.append(self.reduce_spatial_dim_conv)
        self.convs = convs
        dim = conv_dim * input_shape.height * input_shape.width // 4
        self.fcs = []
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            dim = fc_dim
        self.prediction = nn.Linear(dim, num_classes * side * side)
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.constant_(self.prediction.bias, 0)
        for layer in convs:
            weight_init.c2_msra_fill(layer)
        for layer in self.fcs:
            weight_init.c2_xavier_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        x = torch.flatten(x, 1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.prediction(x).view(-1, *self.output_shape)
