"""The two models the benchmark compares: torchvision's Mask R-CNN R50-FPN and ours holding its weights."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["torchvision_mask_rcnn", "our_mask_rcnn", "Recorder"]


def _freeze_batchnorm(module):
    """Replace every BatchNorm2d by torchvision's FrozenBatchNorm2d with the same statistics."""
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


def torchvision_mask_rcnn(calibration_images: list, test_size: tuple[int, int] = (800, 1333)) -> Any:
    """torchvision's ``maskrcnn_resnet50_fpn`` as its COCO weights build it (FrozenBN, conv1 + layer1
    frozen), randomly initialised with seed 0, BatchNorm statistics of ``calibration_images``, and
    classification / objectness layers re-drawn wider so that rankings are not near-ties."""
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(weights=None), trainable_layers=3)
    model = MaskRCNN(backbone, num_classes=91, box_score_thresh=0.0, box_detections_per_img=100,
                     min_size=test_size[0], max_size=test_size[1])
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative statistics of the calibration images
    model.train()
    with torch.no_grad():
        model.backbone(model.transform(calibration_images)[0].tensors)
    _freeze_batchnorm(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (model.roi_heads.box_predictor.cls_score, model.rpn.head.cls_logits):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.05)
    return model.eval()


def our_mask_rcnn(torchvision_model, folder: Path, device, test_size: tuple[int, int] = (800, 1333)) -> Any:
    """``experiment=torchvision_R_50_FPN_coco`` holding ``torchvision_model``'s weights (via a
    ``.pth`` file and the loader behind ``weights=``), resizing test images to ``test_size``
    (shortest edge, longest-edge cap) as torchvision's transform does."""
    import torch

    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.registry import META_ARCHITECTURES

    cfg = compose([
        "experiment=torchvision_R_50_FPN_coco",
        "dataset.num_classes=90",
        "model.backbone.bottom_up.norm_eps=1e-5",  # torchvision's BatchNorm eps when built without COCO weights
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        f"model.test_resize=[{test_size[0]},{test_size[1]}]",
    ])
    path = folder / "maskrcnn_resnet50_fpn_seed0.pth"
    torch.save(torchvision_model.state_dict(), path)
    model = META_ARCHITECTURES.build(cfg.model, path="model")
    with contextlib.redirect_stdout(sys.stderr):
        Checkpointer(model).load(str(path), strict=True)
    return model.to(device).eval()


class Recorder:
    """Forward hooks recording the input size and memory format of a backbone and the count of proposals."""

    def __init__(self, backbone, rpn) -> None:
        self.input_size: Optional[tuple[int, int]] = None
        self.memory_format: Optional[str] = None
        self.proposals: list[int] = []
        self._handles = [
            backbone.register_forward_pre_hook(self._backbone),
            rpn.register_forward_hook(self._rpn),
        ]

    def _backbone(self, module, args) -> None:
        from framework.layers.memory_format import is_channels_last

        self.input_size = tuple(args[0].shape[-2:])
        self.memory_format = "channels_last" if is_channels_last(args[0]) else "NCHW"

    def _rpn(self, module, args, output) -> None:
        self.proposals = [len(p) for p in output[0]]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
