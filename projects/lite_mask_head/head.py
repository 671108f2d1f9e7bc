"""LiteMaskHead: depthwise-separable convs instead of dense 3x3 convs (about 8x fewer FLOPs per conv)."""

from __future__ import annotations

import torch
from fvcore.nn import weight_init
from torch import nn

from framework.layers import ShapeSpec
from framework.modeling.roi_heads.mask_head import BaseMaskRCNNHead
from framework.registry import MASK_HEADS


@MASK_HEADS.register()
class LiteMaskHead(BaseMaskRCNNHead):
    """``num_conv`` depthwise 3x3 + pointwise 1x1 blocks, 2x deconv, 1x1 predictor.

    Runtime args: input_shape (C channels), num_classes K. Input (R, C, S, S) -> logits (R, K, 2S, 2S).
    Only ``layers()`` is new: the loss and inference come from BaseMaskRCNNHead.
    """

    def __init__(self, input_shape: ShapeSpec, num_classes: int, *, num_conv: int = 4, conv_dim: int = 128, **kwargs):
        super().__init__(**kwargs)  # the base's knobs (loss_weight) are inherited, not restated
        blocks = []
        cur = input_shape.channels
        for _ in range(num_conv):
            blocks += [nn.Conv2d(cur, cur, 3, padding=1, groups=cur), nn.Conv2d(cur, conv_dim, 1), nn.ReLU()]
            cur = conv_dim
        self.blocks = nn.Sequential(*blocks)
        self.deconv = nn.ConvTranspose2d(cur, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m is not self.predictor:
                weight_init.c2_msra_fill(m)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(torch.relu(self.deconv(self.blocks(x))))
