"""Feature Pyramid Network (Lin et al. 2017) on top of any backbone, with detectron2's names."""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence

import torch
from fvcore.nn.weight_init import c2_xavier_fill
from torch import Tensor, nn
from torch.nn import functional as F

from framework.errors import ConfigError, did_you_mean
from framework.layers.batch_norm import get_norm
from framework.layers.shape_spec import check_feature_names
from framework.layers.wrappers import Conv2d
from framework.modeling.backbone.backbone import Backbone
from framework.registry import BACKBONES, Spec

__all__ = ["FPN", "LastLevelMaxPool", "add_upsampled_"]


class LastLevelMaxPool(nn.Module):
    """Extra coarsest level: P6 = P5 subsampled by 2 (max pool with kernel 1, stride 2).

    Args:
        in_feature: the pyramid level it reads (the coarsest one, "p5" for res2..res5 inputs).

    Shape: ``forward(p5 (B, C, H, W))`` -> ``[p6 (B, C, ceil(H / 2), ceil(W / 2))]``.
    """

    num_levels = 1

    def __init__(self, in_feature: str = "p5") -> None:
        super().__init__()
        self.in_feature = in_feature

    def forward(self, x: Tensor) -> list[Tensor]:
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


_TOP_BLOCKS = {"LastLevelMaxPool": LastLevelMaxPool}


@BACKBONES.register()
class FPN(Backbone):
    """Feature pyramid: lateral 1x1 convs, a nearest-neighbour x2 top-down path, 3x3 output convs.

    For bottom-up features res2..res5 (strides 4..32) it outputs ``p2`` ... ``p5`` (and ``p6``
    with the default top block), each (B, out_channels, H / stride, W / stride), strides 4..64.
    Input H and W must be divisible by :attr:`size_divisibility` (the stride of the coarsest
    input feature) so that upsampled maps line up.

    Knobs:
        bottom_up: the backbone whose features feed the pyramid.
        in_features: its outputs to use, finest first; strides must double from one to the next.
        out_channels: channels of every pyramid level.
        norm: norm after the lateral and output convs ("" keeps their bias, as detectron2).
        top_block: extra coarser levels computed from the last one (None: none).
        fuse_type: how the lateral and top-down maps are merged: "sum" or "avg".
    """

    def __init__(
        self,
        *,
        bottom_up: Spec[BACKBONES] = "ResNet",
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        out_channels: int = 256,
        norm: Literal["", "BN", "FrozenBN", "GN", "SyncBN"] = "",
        top_block: Optional[Literal["LastLevelMaxPool"]] = "LastLevelMaxPool",
        fuse_type: Literal["sum", "avg"] = "sum",
    ) -> None:
        super().__init__()
        self.bottom_up = BACKBONES.build(bottom_up)
        in_features = list(in_features)
        input_shapes = self.bottom_up.output_shape()
        check_feature_names(
            in_features, input_shapes, knob="FPN.in_features", hint="set the bottom-up's out_features to produce more"
        )
        strides = [input_shapes[f].stride for f in in_features]
        _check_strides(in_features, strides)
        if fuse_type not in ("sum", "avg"):
            raise ConfigError(f"FPN fuse_type={fuse_type!r}; valid values: 'sum', 'avg'")
        if top_block is not None and top_block not in _TOP_BLOCKS:
            raise ConfigError(
                f"FPN top_block={top_block!r} is unknown.{did_you_mean(top_block, _TOP_BLOCKS)} "
                f"Valid: {list(_TOP_BLOCKS)} or None."
            )

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for feature, stride in zip(in_features, strides):
            lateral_conv = Conv2d(
                input_shapes[feature].channels, out_channels, kernel_size=1, bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            output_conv = Conv2d(
                out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            c2_xavier_fill(lateral_conv)
            c2_xavier_fill(output_conv)
            level = int(math.log2(stride))
            self.add_module(f"fpn_lateral{level}", lateral_conv)
            self.add_module(f"fpn_output{level}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Coarsest first, the order of the top-down pass. Plain lists: the modules are already
        # registered under their fpn_* names, which checkpoints use.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        # The top block extends the coarsest level ("p5" for res2..res5, as detectron2).
        coarsest = f"p{int(math.log2(strides[-1]))}"
        self.top_block = _TOP_BLOCKS[top_block](coarsest) if top_block is not None else None
        self.in_features = tuple(in_features)
        self.fuse_type = fuse_type

        if self.top_block is not None:
            last = int(math.log2(strides[-1]))
            for level in range(last + 1, last + 1 + self.top_block.num_levels):
                self._out_feature_strides[f"p{level}"] = 2**level
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {name: out_channels for name in self._out_features}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Args:
            x: images (B, C, H, W) with H, W divisible by :attr:`size_divisibility`.

        Returns:
            ``{"p2": (B, out_channels, H / 4, W / 4), ..., "p6": (B, out_channels, H / 64, W / 64)}``
            (names follow the strides of ``in_features``).
        """
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for idx in range(1, len(self.lateral_convs)):
            feature = self.in_features[-idx - 1]
            lateral = self.lateral_convs[idx](bottom_up_features[feature])
            upsampled = (2 * prev.shape[-2], 2 * prev.shape[-1])
            if upsampled != tuple(lateral.shape[-2:]):
                raise ValueError(
                    f"FPN: {feature} is {tuple(lateral.shape[-2:])} but the upsampled coarser level is "
                    f"{upsampled}; the input {tuple(x.shape[-2:])} must have H and W "
                    f"divisible by size_divisibility={self.size_divisibility} (pad the images)"
                )
            prev = add_upsampled_(lateral, prev)
            if self.fuse_type == "avg":
                prev = prev.div_(2)
            results.insert(0, self.output_convs[idx](prev))
        if self.top_block is not None:
            name = self.top_block.in_feature
            if name in bottom_up_features:
                top_in = bottom_up_features[name]
            else:
                top_in = results[self._out_features.index(name)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


def add_upsampled_(fine: Tensor, coarse: Tensor) -> Tensor:
    """``fine += F.interpolate(coarse, scale_factor=2, mode="nearest")``, in place.

    ``fine`` (a lateral conv's fresh output) is overwritten, which saves writing and reading a new
    (B, C, H, W) map, at P2 the largest of the pyramid (so a forward hook on ``fpn_lateral{i}``
    sees its output turn into the merged map; clone it in the hook to keep it). Without gradients the upsampled map is not
    made either: each coarse pixel is added to its 2x2 block of ``fine`` through a broadcast over a
    (H/2, 2, W/2, 2) view, the same sums bit for bit. When gradients are recorded the upsampled
    map is made, because autograd's backward of that broadcast (a strided reduction) is slower than
    nearest upsampling's own.

    Shape:
        fine (B, C, H, W), coarse (B, C, H / 2, W / 2) -> fine.
    """
    if torch.is_grad_enabled() and (fine.requires_grad or coarse.requires_grad):
        return fine.add_(F.interpolate(coarse, scale_factor=2.0, mode="nearest"))
    b, c, h, w = fine.shape
    fine.view(b, c, h // 2, 2, w // 2, 2).add_(coarse[:, :, :, None, :, None])
    return fine


def _check_strides(in_features: list[str], strides: list[int]) -> None:
    for i in range(1, len(strides)):
        if strides[i] != 2 * strides[i - 1]:
            raise ConfigError(
                f"FPN in_features {in_features} have strides {strides}; each must be twice the "
                f"previous one (list them finest first, without gaps)"
            )
