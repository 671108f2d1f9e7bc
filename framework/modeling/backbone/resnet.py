"""ResNet backbones (R18 ... R152, ResNeXt via ``num_groups``), with detectron2's layout and names.

Module names match detectron2 checkpoints one to one: ``stem.conv1`` (+ ``.norm``), then stages
``res2`` ... ``res5`` made of blocks ``res2.0``, ``res2.1``, ... with convolutions ``conv1``,
``conv2``, (``conv3``) and ``shortcut``, each carrying its norm as ``.norm``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import numpy as np
from fvcore.nn.weight_init import c2_msra_fill
from torch import Tensor, nn
from torch.nn import functional as F

from framework.errors import ConfigError, did_you_mean
from framework.layers.batch_norm import convert_frozen_batchnorm, get_norm
from framework.layers.wrappers import Conv2d
from framework.modeling.backbone.backbone import Backbone
from framework.registry import BACKBONES

__all__ = ["CNNBlockBase", "BasicStem", "BasicBlock", "BottleneckBlock", "make_stage", "ResNet"]

#: Blocks per stage (res2, res3, res4, res5) for each depth.
BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}

#: Output names in network order; the index is the ``freeze_at`` value that freezes up to it.
_FEATURE_ORDER = ("stem", "res2", "res3", "res4", "res5")


class CNNBlockBase(nn.Module):
    """A block with known input/output channels and stride, that can be frozen.

    Attributes:
        in_channels, out_channels: C of the (N, C, H, W) input and output.
        stride: how much the block downsamples H and W.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """Stop training this block: parameters get ``requires_grad=False`` and batch norms
        become FrozenBatchNorm2d (so their statistics stop updating too). Returns self."""
        for p in self.parameters():
            p.requires_grad = False
        convert_frozen_batchnorm(self)
        return self


class BasicStem(CNNBlockBase):
    """ResNet stem: 7x7 conv (stride 2) + norm + ReLU, then 3x3 max pool (stride 2).

    Shape: (N, in_channels, H, W) -> (N, out_channels, ceil(H / 4), ceil(W / 4)) for even H, W.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False,
            norm=get_norm(norm, out_channels),
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    The shortcut is a 1x1 conv + norm when the channel count changes, the identity otherwise.

    Shape: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                   norm=get_norm(norm, out_channels))
            if in_channels != out_channels
            else None
        )
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.shortcut, self.conv1, self.conv2):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        # In place, as detectron2's and torchvision's blocks do: a hook on the last conv sees its output overwritten.
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


class BottleneckBlock(CNNBlockBase):
    """1x1 (reduce) -> 3x3 (grouped, maybe dilated) -> 1x1 (expand), with a residual connection.

    Args:
        bottleneck_channels: channels of the inner 3x3 conv.
        stride: applied in the first 1x1 conv if ``stride_in_1x1`` (MSRA / Caffe2 models, the
            detectron2 default), else in the 3x3 conv (torchvision models).
        num_groups: groups of the 3x3 conv (ResNeXt when > 1).
        dilation: dilation (and padding) of the 3x3 conv.

    Shape: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False,
                   norm=get_norm(norm, out_channels))
            if in_channels != out_channels
            else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels, bottleneck_channels, kernel_size=1, stride=stride_1x1, bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride_3x3,
            padding=dilation, bias=False, groups=num_groups, dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if layer is not None:
                c2_msra_fill(layer)
        # detectron2 keeps the default (ones) init of the last norm's weight, not zero-init.

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        # In place, as detectron2's and torchvision's blocks do: a hook on the last conv sees its output overwritten.
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


def make_stage(
    block_class: type[CNNBlockBase],
    num_blocks: int,
    *,
    in_channels: int,
    out_channels: int,
    first_stride: int = 1,
    **kwargs: Any,
) -> list[CNNBlockBase]:
    """``num_blocks`` blocks of ``block_class``; only the first one changes channels and strides.

    ``kwargs`` go to every block (norm, bottleneck_channels, ...).
    """
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            block_class(in_channels, out_channels, stride=first_stride if i == 0 else 1, **kwargs)
        )
        in_channels = out_channels
    return blocks


@BACKBONES.register()
class ResNet(Backbone):
    """ResNet (He et al. 2016) as in detectron2: a stem then stages ``res2`` ... ``res5``.

    Outputs ``{name: (B, C, H / stride, W / stride)}`` for each name in ``out_features``, with
    strides stem 4, res2 4, res3 8, res4 16, res5 32 (16 with ``res5_dilation=2``) and channels
    ``res2_out_channels * 2**(i - 2)`` for ``res{i}``. Only the stages up to the last requested
    output are built, so no parameter goes without gradient.

    Knobs:
        depth: 18/34 use BasicBlock, 50/101/152 BottleneckBlock.
        norm: norm after every conv ("FrozenBN" for fine-tuning from ImageNet weights).
        norm_eps: epsilon of those norms (torchvision's COCO-trained detectors use 0.0).
        freeze_at: freeze the stem (1) and stages res2 .. res{freeze_at} (2..5); 0 freezes nothing.
            Frozen parts have ``requires_grad=False`` and FrozenBatchNorm2d norms.
        out_features: which of "stem", "res2", ..., "res5" to return.
        stride_in_1x1: put the stride of bottleneck blocks in the 1x1 conv (MSRA/Caffe2 weights,
            detectron2 model zoo) rather than in the 3x3 conv (torchvision weights).
        num_groups, width_per_group: ResNeXt cardinality and width (bottleneck channels of res2
            are ``num_groups * width_per_group``).
        stem_out_channels: channels out of the stem.
        res2_out_channels: channels out of res2 (64 in the standard ResNet-18/34, 256 for deeper).
        res5_dilation: 2 keeps res5 at stride 16 with dilated 3x3 convs.
        in_channels: channels of the input image.
    """

    def __init__(
        self,
        *,
        depth: Literal[18, 34, 50, 101, 152] = 50,
        norm: Literal["FrozenBN", "BN", "SyncBN", "GN", ""] = "FrozenBN",
        norm_eps: float = 1e-5,
        freeze_at: int = 2,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        stride_in_1x1: bool = True,
        num_groups: int = 1,
        width_per_group: int = 64,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        res5_dilation: Literal[1, 2] = 1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        out_features = list(out_features)
        _check_args(depth, freeze_at, out_features, res2_out_channels, res5_dilation, num_groups)

        if norm_eps < 0:
            raise ConfigError(f"ResNet norm_eps must be >= 0, got {norm_eps}")
        norm = functools.partial(get_norm, norm, eps=norm_eps)  # what the blocks call with their channels
        self.stem = BasicStem(in_channels, stem_out_channels, norm=norm)
        self._out_feature_strides = {"stem": self.stem.stride}
        self._out_feature_channels = {"stem": self.stem.out_channels}

        last_stage = max(_FEATURE_ORDER.index(f) for f in out_features) + 1  # res{last_stage}
        stage_in, stage_out = stem_out_channels, res2_out_channels
        bottleneck_channels = num_groups * width_per_group
        stride = self.stem.stride
        self.stage_names: tuple[str, ...] = ()
        for stage_idx in range(2, last_stage + 1):
            dilation = res5_dilation if stage_idx == 5 else 1
            # res2 follows the stem's max pool, and a dilated res5 replaces its stride by dilation.
            first_stride = 1 if stage_idx == 2 or dilation == 2 else 2
            if depth in (18, 34):
                block_class, extra = BasicBlock, {}
            else:
                block_class, extra = BottleneckBlock, dict(
                    bottleneck_channels=bottleneck_channels,
                    stride_in_1x1=stride_in_1x1,
                    dilation=dilation,
                    num_groups=num_groups,
                )
            blocks = make_stage(
                block_class,
                BLOCKS_PER_STAGE[depth][stage_idx - 2],
                in_channels=stage_in,
                out_channels=stage_out,
                first_stride=first_stride,
                norm=norm,
                **extra,
            )
            name = f"res{stage_idx}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names += (name,)
            stride = int(stride * np.prod([b.stride for b in blocks]))
            self._out_feature_strides[name] = stride
            self._out_feature_channels[name] = blocks[-1].out_channels
            stage_in, stage_out, bottleneck_channels = stage_out, stage_out * 2, bottleneck_channels * 2

        self._out_features = out_features
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the stem (``freeze_at >= 1``) and stages res2 .. res{freeze_at}. Returns self."""
        if freeze_at >= 1:
            self.stem.freeze()
        for stage_idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= stage_idx:
                for block in getattr(self, name).children():
                    block.freeze()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Args:
            x: images (B, in_channels, H, W).

        Returns:
            name -> (B, C, H / stride, W / stride) for each name of ``out_features``.
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet takes (B, C, H, W) images, got a tensor of shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def _check_args(
    depth: int, freeze_at: int, out_features: list[str], res2_out_channels: int, res5_dilation: int,
    num_groups: int,
) -> None:
    if depth not in BLOCKS_PER_STAGE:
        raise ConfigError(f"ResNet depth={depth!r} is not supported; valid depths: {list(BLOCKS_PER_STAGE)}")
    if not out_features:
        raise ConfigError(f"ResNet out_features is empty; choose from {list(_FEATURE_ORDER)}")
    for f in out_features:
        if f not in _FEATURE_ORDER:
            raise ConfigError(
                f"ResNet out_features has unknown name {f!r}.{did_you_mean(f, _FEATURE_ORDER)} "
                f"Valid names: {list(_FEATURE_ORDER)}."
            )
    if not 0 <= freeze_at <= 5:
        raise ConfigError(
            f"ResNet freeze_at={freeze_at} is out of range: 0 (train all), 1 (freeze the stem) "
            f"or 2..5 (stem and res2..res{{freeze_at}})"
        )
    if res5_dilation not in (1, 2):
        raise ConfigError(f"ResNet res5_dilation={res5_dilation!r}; valid values: 1, 2")
    if depth in (18, 34):
        # BasicBlock has no expansion; detectron2 requires res2_out_channels=64 here. Other widths
        # (a narrow ResNet-18 for CPUs) are allowed: res2 gets a projection shortcut when its
        # width differs from the stem's.
        if res5_dilation != 1:
            raise ConfigError(f"ResNet depth={depth} needs res5_dilation=1 (got {res5_dilation})")
        if num_groups != 1:
            raise ConfigError(f"ResNet depth={depth} needs num_groups=1 (got {num_groups})")
