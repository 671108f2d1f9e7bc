"""Plugin: any torchvision classification model as the bottom-up backbone of FPN.

Selectable as ``model/backbone/bottom_up=TorchvisionBackbone`` (or the shipped FPN options
``model/backbone=FPN_tv_resnet50`` ...); see README.md. Nothing in framework/ or configs/ knows
about this folder: plugin discovery imports it and the decorator registers the backbone.
"""

from projects.torchvision_backbone.backbone import TorchvisionBackbone

__all__ = ["TorchvisionBackbone"]
