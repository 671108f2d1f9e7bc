"""torchvision checkpoints -> this framework's parameter names, by rule.

Two kinds of files:

* **detectors**: ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` state dicts (the v1
  layout: ``backbone.body.*``, ``backbone.fpn.*``, ``rpn.head.*``, ``roi_heads.*``), in the key
  style of any torchvision release (``rpn.head.conv.weight`` before 0.13, ``rpn.head.conv.0.0.weight``
  after; likewise ``mask_head.mask_fcn1`` / ``mask_head.0.0``);
* **ImageNet classifiers**: ``resnet18`` ... ``resnet152`` / ``resnext*`` state dicts (``conv1``,
  ``bn1``, ``layer1.0.conv1``, ..., ``fc``), returned with names relative to our ResNet
  (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``, ...); the caller places them under the
  model's ResNet prefix.

Class layout. torchvision's box predictor has background at index 0 and class-specific boxes for
it; ours has background last and no background boxes. The rows are permuted (and the background
boxes / mask channel dropped) so that our class ``k`` is torchvision's label ``k + 1``, which for
COCO weights is the COCO category id. Into a model with 80 classes the 80 real COCO categories are
selected from torchvision's 91-entry layout (whose 10 unused ids are dropped: their logits still
took a little probability mass in torchvision's softmax, so scores differ slightly; build the model
with 90 classes for torchvision's outputs: tests/checkpoint/test_torchvision_equivalence.py checks
its detections to 1e-3 px and 1e-4 in score). Any other class count is left as converted, for
the loader to report the shape mismatch (fine-tuning: ``weights_skip_mismatch=true``).
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

import torch

__all__ = [
    "is_torchvision_detector",
    "is_torchvision_classifier",
    "convert_torchvision_detector",
    "convert_torchvision_classifier",
    "torchvision_resnet_to_framework",
]

Tensor = torch.Tensor

# torchvision ResNet module -> ours, for one name relative to the ResNet.
_STEM = {"conv1.": "stem.conv1.", "bn1.": "stem.conv1.norm."}
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(.+)$")
_BLOCK_PARTS = [
    (re.compile(r"^conv(\d)\."), r"conv\1."),
    (re.compile(r"^bn(\d)\."), r"conv\1.norm."),
    (re.compile(r"^downsample\.0\."), "shortcut."),
    (re.compile(r"^downsample\.1\."), "shortcut.norm."),
]

# Detector parts outside the ResNet: (pattern on the torchvision key, our key template, offset added to a
# leading level/layer index). torchvision's FPN level k is our p{k+2}; its mask_head.{k}.0 (>= 0.13) is
# our mask_fcn{k+1}, and its older mask_fcn{k} names are already 1-based.
_DETECTOR_RULES = [
    (re.compile(r"^backbone\.fpn\.inner_blocks\.(\d)\.(?:0\.)?(weight|bias)$"), "backbone.fpn_lateral{}.{}", 2),
    (re.compile(r"^backbone\.fpn\.layer_blocks\.(\d)\.(?:0\.)?(weight|bias)$"), "backbone.fpn_output{}.{}", 2),
    (re.compile(r"^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$"), "proposal_generator.rpn_head.conv.{}", 0),
    (re.compile(r"^rpn\.head\.cls_logits\.(weight|bias)$"), "proposal_generator.rpn_head.objectness_logits.{}", 0),
    (re.compile(r"^rpn\.head\.bbox_pred\.(weight|bias)$"), "proposal_generator.rpn_head.anchor_deltas.{}", 0),
    (re.compile(r"^roi_heads\.box_head\.fc6\.(weight|bias)$"), "roi_heads.box_head.fc1.{}", 0),
    (re.compile(r"^roi_heads\.box_head\.fc7\.(weight|bias)$"), "roi_heads.box_head.fc2.{}", 0),
    (re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$"), "roi_heads.box_predictor.{}.{}", 0),
    (re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)$"), "roi_heads.mask_head.mask_fcn{}.{}", 0),
    (re.compile(r"^roi_heads\.mask_head\.(\d)\.0\.(weight|bias)$"), "roi_heads.mask_head.mask_fcn{}.{}", 1),
    (re.compile(r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$"), "roi_heads.mask_head.deconv.{}", 0),
    (re.compile(r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$"), "roi_heads.mask_head.predictor.{}", 0),
]


def is_torchvision_classifier(sd: Mapping[str, Tensor]) -> bool:
    """A torchvision ResNet/ResNeXt classification state dict (``conv1.weight``, ``layer1.*``, ``fc.*``)."""
    return "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd)


def is_torchvision_detector(sd: Mapping[str, Tensor]) -> bool:
    """A torchvision R-CNN state dict (``backbone.body.*`` with ``rpn.head.*`` or ``roi_heads.*``)."""
    return "backbone.body.conv1.weight" in sd and any(k.startswith(("rpn.head.", "roi_heads.")) for k in sd)


def torchvision_resnet_to_framework(name: str) -> Optional[str]:
    """Our ResNet-relative name for a torchvision ResNet name, or None for what we do not keep
    (``fc.*``, ``num_batches_tracked``). E.g. ``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``."""
    if name.endswith("num_batches_tracked") or name.startswith("fc."):
        return None
    for old, new in _STEM.items():
        if name.startswith(old):
            return new + name[len(old):]
    m = _BLOCK.match(name)
    if m is None:
        raise KeyError(f"not a torchvision ResNet parameter name: {name!r}")
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    for pattern, repl in _BLOCK_PARTS:
        new_rest, n = pattern.subn(repl, rest, count=1)
        if n:
            return f"res{stage}.{block}.{new_rest}"
    raise KeyError(f"not a torchvision ResNet parameter name: {name!r}")


def convert_torchvision_classifier(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision ImageNet ResNet state dict -> ResNet-relative names (classifier ``fc`` dropped)."""
    out = {}
    for name, value in sd.items():
        new = torchvision_resnet_to_framework(name)
        if new is not None:
            out[new] = value
    return out


def _detector_key(name: str) -> Optional[str]:
    if name.startswith("backbone.body."):
        new = torchvision_resnet_to_framework(name[len("backbone.body."):])
        return None if new is None else "backbone.bottom_up." + new
    for pattern, template, offset in _DETECTOR_RULES:
        m = pattern.match(name)
        if m is not None:
            groups = [str(int(g) + offset) if g.isdigit() else g for g in m.groups()]
            return template.format(*groups)
    raise KeyError(
        f"torchvision detector key {name!r} has no counterpart here (only the v1 ResNet-FPN Mask/Faster "
        "R-CNN layout is converted: maskrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn)"
    )


def _coco_rows(num_tv_classes: int) -> Optional[list[int]]:
    """torchvision label of each of the 80 COCO classes (= its category id) for a 91-entry layout."""
    if num_tv_classes != 91:
        return None
    from framework.data.builtin import COCO_CATEGORIES  # a constant table: imports no component

    return [cat_id for cat_id, _ in COCO_CATEGORIES]


def _class_rows(num_tv_classes: int, num_model_classes: Optional[int]) -> list[int]:
    """Which torchvision labels (1 .. C-1) become our classes 0 .. K-1, in order."""
    all_fg = list(range(1, num_tv_classes))
    if num_model_classes is None or num_model_classes == len(all_fg):
        return all_fg
    coco = _coco_rows(num_tv_classes)
    if coco is not None and num_model_classes == len(coco):
        return coco
    return all_fg  # another class count: the loader reports the shape mismatch


def convert_torchvision_detector(
    sd: Mapping[str, Tensor], model_state_dict: Optional[Mapping[str, Tensor]] = None
) -> dict[str, Tensor]:
    """A torchvision ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` state dict -> our names.

    Args:
        sd: the torchvision state dict; ``cls_score`` has C = K_tv + 1 rows, background first.
        model_state_dict: the target model's state dict, used only for its number of classes K
            (``roi_heads.box_predictor.cls_score.weight`` has K + 1 rows).
    Returns:
        our state dict; ``cls_score`` (K+1, D) with background last, ``bbox_pred`` (4K, D),
        mask ``predictor`` (K, 256, 1, 1), for the classes chosen as the module docstring says.
    """
    num_model_classes = None
    if model_state_dict is not None and "roi_heads.box_predictor.cls_score.weight" in model_state_dict:
        num_model_classes = model_state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
    out: dict[str, Tensor] = {}
    rows: Optional[list[int]] = None
    for name, value in sd.items():
        new = _detector_key(name)
        if new is None:
            continue
        if new.startswith(("roi_heads.box_predictor.", "roi_heads.mask_head.predictor.")):
            if rows is None:
                rows = _class_rows(sd["roi_heads.box_predictor.cls_score.weight"].shape[0], num_model_classes)
            index = torch.tensor(rows)
            if new.startswith("roi_heads.box_predictor.cls_score."):
                value = torch.cat([value[index], value[:1]])  # background goes last
            elif new.startswith("roi_heads.box_predictor.bbox_pred."):
                value = value.reshape(-1, 4, *value.shape[1:])[index].flatten(0, 1)
            else:  # mask predictor: one channel per class, none for background
                value = value[index]
        out[new] = value
    return out
