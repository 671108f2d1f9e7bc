"""Helpers of the checkpoint tests: small models and the Caffe2 names of our ResNet keys."""

from __future__ import annotations

import re

import torch

from framework.config.compose import compose
from framework.registry import META_ARCHITECTURES


def build(*overrides: str, seed: int = 0) -> torch.nn.Module:
    """The model of the composed config ``overrides``, randomly initialised with ``seed``, in eval mode."""
    torch.manual_seed(seed)
    cfg = compose(list(overrides))
    return META_ARCHITECTURES.build(cfg.model, path="model").eval()


_BRANCHES = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}
_NORM_LEAVES = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def caffe2_name(resnet_key: str) -> str:
    """Written independently of the converter: ``res2.0.conv1.norm.weight`` -> ``res2_0_branch2a_bn_s``."""
    m = re.fullmatch(r"(stem\.conv1|res(\d)\.(\d+)\.(\w+))(\.norm)?\.(\w+)", resnet_key)
    assert m, resnet_key
    layer, stage, block, conv, norm, leaf = m.groups()
    if layer == "stem.conv1":
        return f"res_conv1_bn_{_NORM_LEAVES[leaf]}" if norm else f"conv1_{leaf[0]}"
    base = f"res{stage}_{block}_{_BRANCHES[conv]}"
    return f"{base}_bn_{_NORM_LEAVES[leaf]}" if norm else f"{base}_{leaf[0]}"
