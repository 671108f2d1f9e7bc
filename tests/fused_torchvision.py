"""torchvision ResNets with every (conv, BatchNorm) pair fused by torch's own fuser, which is what
our convolutions compute for a frozen norm (framework.layers.batch_norm.fold_into_conv): the
reference for bit-identical comparisons."""

from __future__ import annotations

import torch
import torchvision
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_resnet_batchnorms(resnet: torch.nn.Module) -> torch.nn.Module:
    """Fuse, in place, the stem and every block of a torchvision ResNet (or its detection body:
    anything with ``conv1`` / ``bn1`` and ResNet blocks below it); eval-mode BatchNorm2d or
    torchvision's FrozenBatchNorm2d. Returns ``resnet``."""
    pairs = [(resnet, "conv1", "bn1")]
    for block in resnet.modules():
        if isinstance(block, (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)):
            pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if isinstance(bn, torchvision.ops.FrozenBatchNorm2d):  # fuse_conv_bn_eval takes BatchNorm modules
            eval_bn = torch.nn.BatchNorm2d(bn.weight.numel(), eps=bn.eps).eval()
            eval_bn.load_state_dict({k: getattr(bn, k) for k in ("weight", "bias", "running_mean", "running_var")},
                                    strict=False)
            bn = eval_bn
        setattr(parent, conv_name, fuse_conv_bn_eval(conv.eval(), bn))
        setattr(parent, bn_name, torch.nn.Identity())
    return resnet
