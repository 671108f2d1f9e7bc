"""Backbones: image batch -> named feature maps. Importing this registers ResNet and FPN."""

from framework.modeling.backbone.backbone import Backbone
from framework.modeling.backbone.fpn import FPN, LastLevelMaxPool
from framework.modeling.backbone.resnet import (
    BasicBlock,
    BasicStem,
    BottleneckBlock,
    CNNBlockBase,
    ResNet,
    make_stage,
)

__all__ = [
    "Backbone",
    "ResNet",
    "FPN",
    "LastLevelMaxPool",
    "CNNBlockBase",
    "BasicStem",
    "BasicBlock",
    "BottleneckBlock",
    "make_stage",
]
