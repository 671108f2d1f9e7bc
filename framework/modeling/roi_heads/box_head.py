"""Box heads: pooled RoI features -> one feature vector per RoI."""

from __future__ import annotations

from typing import Literal

import torch
from fvcore.nn import weight_init
from torch import nn

from framework.layers import Conv2d, ShapeSpec, get_norm
from framework.registry import BOX_HEADS

__all__ = ["FastRCNNConvFCHead"]


@BOX_HEADS.register()
class FastRCNNConvFCHead(nn.Sequential):
    """``num_conv`` 3x3 convs then ``num_fc`` fully connected layers, each followed by ReLU.

    The default (0 conv, 2 fc of 1024) is the "2fc" head of Mask R-CNN R50-FPN.

    Runtime args: input_shape: ShapeSpec(channels=C, height=S, width=S) of the pooled features.
    Knobs: num_conv, conv_dim, num_fc, fc_dim, norm (for the convs).
    Input (R, C, S, S) -> output (R, fc_dim) (or (R, conv_dim, S, S) with num_fc=0).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_conv: int = 0,
        conv_dim: int = 256,
        num_fc: int = 2,
        fc_dim: int = 1024,
        norm: Literal["", "BN", "FrozenBN", "GN", "SyncBN"] = "",
    ):
        super().__init__()
        if num_conv + num_fc == 0:
            raise ValueError("FastRCNNConvFCHead needs at least one conv or fc layer (num_conv + num_fc > 0)")
        shape = (input_shape.channels, input_shape.height, input_shape.width)
        for k in range(num_conv):
            conv = Conv2d(shape[0], conv_dim, 3, padding=1, bias=not norm, norm=get_norm(norm, conv_dim), activation=nn.ReLU(inplace=True))
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{k + 1}", conv)
            shape = (conv_dim, shape[1], shape[2])
        for k in range(num_fc):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(int(shape[0] * (shape[1] or 1) * (shape[2] or 1)), fc_dim)
            weight_init.c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            # not in place: what a forward hook on an fc layer (a common way to read box features) saw stays as it was
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            shape = (fc_dim, None, None)
        self._output_shape = ShapeSpec(channels=shape[0], height=shape[1], width=shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x

    @property
    def output_shape(self) -> ShapeSpec:
        return self._output_shape
