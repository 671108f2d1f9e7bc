"""One dispatch from any supported state dict to this framework's names: :func:`convert_to_framework`.

Formats, in the order they are recognised:

1. our own names / detectron2's (equal): kept as they are, minus the stale keys detectron2 ignores;
2. Caffe2 / MSRA ImageNet ResNets (``res2_0_branch2a_w``): converted by rule, see
   :mod:`framework.checkpoint.detectron2`;
3. a ResNet alone with our names (``stem.conv1.weight``; detectron2's converted torchvision backbones);
4. torchvision detectors and ImageNet classifiers: :mod:`framework.checkpoint.torchvision`.

Backbone-only files (2-4) hold names relative to a ResNet; they are placed under the model's ResNet
prefix, found by rule (:func:`resnet_prefix`). Their ImageNet classifier heads are dropped.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from framework.checkpoint import torchvision as tv
from framework.checkpoint.detectron2 import convert_caffe2_backbone, drop_stale_keys, is_caffe2_backbone

__all__ = ["convert_to_framework", "resnet_prefix", "SAME_NAMES"]

Tensor = torch.Tensor

#: The source description of files whose names are already ours (this framework, detectron2).
SAME_NAMES = "detectron2 names (this framework's)"
_STEM = "stem.conv1.weight"


def resnet_prefix(model_keys: Iterable[str]) -> str:
    """The unique prefix P with ``P + "stem.conv1.weight"`` among ``model_keys``.

    ``backbone.bottom_up.`` for FPN models, ``backbone.`` for a plain ResNet backbone, ``""`` for a
    bare ResNet.

    Raises:
        ValueError: the model has no ResNet, or several.
    """
    prefixes = sorted(k[: -len(_STEM)] for k in model_keys if k == _STEM or k.endswith("." + _STEM))
    if len(prefixes) != 1:
        found = "none" if not prefixes else ", ".join(repr(p) for p in prefixes)
        raise ValueError(
            f"cannot place ResNet backbone weights: the model must have exactly one ResNet, i.e. one key ending "
            f"in {_STEM!r}; found {found}"
        )
    return prefixes[0]


def convert_to_framework(
    state_dict: Mapping[str, Tensor], model_state_dict: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], str]:
    """Detect the naming of ``state_dict`` and convert it to the names of ``model_state_dict``.

    Args:
        state_dict: the weights of a file: tensors or numpy arrays; a "module." prefix on every key
            (a model saved inside DistributedDataParallel) is stripped.
        model_state_dict: the target model's state dict (keys and, for torchvision detectors, the
            number of classes are used).
    Returns:
        (weights with our names, a description of the source such as ``"Caffe2/MSRA ImageNet
        backbone"``). Weights already named like the model are returned as they are (the same dict
        when nothing stale is dropped), so loading our own checkpoints costs one pass over the keys.
    Raises:
        ValueError: a value that is not an array, a backbone-only file for a model without exactly one
            ResNet, or Caffe2 names that are not a ResNet's.
    """
    state_dict = drop_stale_keys(_as_tensors(state_dict))
    if all(k in model_state_dict for k in state_dict):
        return state_dict, SAME_NAMES
    if is_caffe2_backbone(state_dict):
        return _place(convert_caffe2_backbone(state_dict), model_state_dict), "Caffe2/MSRA ImageNet backbone"
    if _STEM in state_dict:
        return _place(state_dict, model_state_dict), "ResNet backbone (detectron2 names)"
    if tv.is_torchvision_detector(state_dict):
        return tv.convert_torchvision_detector(state_dict, model_state_dict), "torchvision detector"
    if tv.is_torchvision_classifier(state_dict):
        return _place(tv.convert_torchvision_classifier(state_dict), model_state_dict), "torchvision ImageNet classifier"
    return state_dict, SAME_NAMES


def _as_tensors(state_dict: Mapping[str, Any]) -> Mapping[str, Tensor]:
    """Arrays as tensors, without a "module." prefix on every key; ``state_dict`` itself if already so."""
    strip = bool(state_dict) and all(k.startswith("module.") for k in state_dict)
    if not strip and all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        return state_dict
    out = {}
    for k, v in state_dict.items():
        if isinstance(v, (np.ndarray, np.generic)):
            v = torch.as_tensor(np.asarray(v))
        elif not isinstance(v, torch.Tensor):
            raise ValueError(f"weight {k!r} is a {type(v).__name__}, not a tensor or a numpy array")
        out[k[len("module.") :] if strip else k] = v
    return out


def _place(resnet_state_dict: Mapping[str, Tensor], model_state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    prefix = resnet_prefix(model_state_dict)
    # detectron2's converted torchvision backbones keep the classifier as "stem.fc.*".
    return {prefix + k: v for k, v in resnet_state_dict.items() if not k.startswith(("fc.", "stem.fc."))}
