"""detectron2 / Detectron / MSRA (Caffe2) checkpoint files: reading, name rules and the zoo layout.

* detectron2 model-zoo ``.pkl``: ``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": ...}``
  with detectron2 names, which are ours; ``.pth`` files of detectron2 training runs hold ``"model"``
  too and are read as our own checkpoints.
* Detectron (v1) ``.pkl``: ``{"blobs": {name: ndarray}, ...}``; MSRA ImageNet backbones (``R-50.pkl``,
  ``R-101.pkl``) are bare ``{name: ndarray}`` dicts. Both use Caffe2 names (``res2_0_branch2a_w``),
  converted by :func:`caffe2_to_resnet_name`. Only ResNet backbone names are converted: Detectron
  detection heads are refused by name.
* Stale keys that detectron2 itself ignores (:func:`drop_stale_keys`): ``pixel_mean`` /
  ``pixel_std`` (set from the config) and ``anchor_generator.cell_anchors.*`` (computed).

The rules follow detectron2's ``checkpoint/c2_model_loading.py`` and ``detection_checkpoint.py``.
"""

from __future__ import annotations

import pickle
import re
from typing import Any, Mapping, Optional

import numpy as np
import torch

from framework.checkpoint.errors import CheckpointReadError
from framework.checkpoint.safe_pickle import UnsafePickleError, safe_load

__all__ = [
    "read_pkl",
    "drop_stale_keys",
    "is_caffe2_backbone",
    "caffe2_to_resnet_name",
    "convert_caffe2_backbone",
    "to_detectron2_zoo_layout",
]

Tensor = torch.Tensor

_STALE = re.compile(r"(^|\.)(pixel_mean|pixel_std)$|(^|\.)anchor_generator\.cell_anchors\.")

# One Caffe2 ResNet tensor name: the layer (stem conv1, its norm "res_conv1", or a block branch),
# an optional norm ("_bn" affine channel / batch norm, "_gn" group norm), and the tensor.
_C2_NAME = re.compile(
    r"^(?P<layer>conv1|res_conv1|res(?P<stage>[2-5])_(?P<block>\d+)_branch(?P<branch>1|2a|2b|2c))"
    r"(?:_(?P<norm>bn|gn))?_(?P<leaf>w|b|s|rm|riv)$"
)
_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_CONV_LEAF = {"w": "weight", "b": "bias"}
_NORM_LEAF = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
# Not weights of the ResNet: SGD momenta, the ImageNet classifier ("fc1000", "pred" in some files).
_C2_DROPPED = re.compile(r"_momentum$|^fc1000_|^pred_")


def read_pkl(path: str) -> dict[str, Any]:
    """Read a detectron2 / Detectron / MSRA ``.pkl`` with the restricted unpickler.

    Returns:
        ``{"model": {name: Tensor}, **extras}``: ``"model"`` is the file's ``"model"`` dict, its
        ``"blobs"`` (Detectron), or the file itself when it is a bare dict of arrays; extras are
        ``"__author__"`` / ``"matching_heuristics"`` when the file has them. SGD momenta
        (``*_momentum``) are dropped.
    Raises:
        UnsafePickleError: the file holds anything but plain data and numpy arrays.
    """
    with open(path, "rb") as f:
        try:
            data = safe_load(f, filename=path)
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
            raise CheckpointReadError(f"{path}: not a readable .pkl (corrupt or truncated?): {e}") from None
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path}: expected a dict of weights, got {type(data).__name__}")
    weights = data.get("model", data.get("blobs", data))
    if not isinstance(weights, dict):
        raise CheckpointReadError(f"{path}: expected a dict of weights under 'model', got {type(weights).__name__}")
    model = {}
    for name, value in weights.items():
        if not isinstance(name, str) or name.endswith("_momentum") or name in ("__author__", "matching_heuristics"):
            continue
        if isinstance(value, (np.ndarray, np.generic)):
            model[name] = torch.as_tensor(np.asarray(value))
        elif isinstance(value, torch.Tensor):
            model[name] = value
        else:
            raise CheckpointReadError(f"{path}: weight {name!r} is a {type(value).__name__}, not an array")
    out: dict[str, Any] = {"model": model}
    out.update({k: data[k] for k in ("__author__", "matching_heuristics") if k in data})
    return out


def drop_stale_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` without ``pixel_mean`` / ``pixel_std`` / ``*anchor_generator.cell_anchors.*``.

    Returns ``state_dict`` itself when it is a dict without such keys (our own checkpoints: no copy,
    its ``_metadata`` kept).
    """
    if not any(_STALE.search(k) for k in state_dict):
        return state_dict if isinstance(state_dict, dict) else dict(state_dict)
    return {k: v for k, v in state_dict.items() if not _STALE.search(k)}


def is_caffe2_backbone(state_dict: Mapping[str, Any]) -> bool:
    """Whether the names are Caffe2 ResNet names (an MSRA ImageNet file or a Detectron backbone)."""
    return any(_C2_NAME.match(k) for k in state_dict)


def caffe2_to_resnet_name(name: str) -> Optional[str]:
    """Our ResNet-relative name of a Caffe2 ResNet tensor name, or None for a tensor we drop.

    ``conv1_w`` -> ``stem.conv1.weight``, ``res_conv1_bn_s`` -> ``stem.conv1.norm.weight``,
    ``res2_0_branch2a_w`` -> ``res2.0.conv1.weight`` (2b -> conv2, 2c -> conv3, branch1 -> shortcut),
    ``res2_0_branch1_bn_b`` -> ``res2.0.shortcut.norm.bias``; ``_s`` / ``_b`` / ``_rm`` / ``_riv`` of a
    norm are its weight / bias / running_mean / running_var. Dropped: ``*_momentum``, ``fc1000_*``.

    Raises:
        KeyError: not a Caffe2 ResNet name (e.g. a Detectron detection head).
    """
    if _C2_DROPPED.search(name):
        return None
    m = _C2_NAME.match(name)
    # The stem conv ("conv1") has no norm suffix, its norm ("res_conv1") always has one.
    if m is None or (m["layer"] == "conv1" and m["norm"]) or (m["layer"] == "res_conv1" and not m["norm"]):
        raise KeyError(f"not a Caffe2 ResNet tensor name: {name!r}")
    leaves = _NORM_LEAF if m["norm"] else _CONV_LEAF
    if m["leaf"] not in leaves:
        raise KeyError(f"not a Caffe2 ResNet tensor name: {name!r}")
    layer = f"res{m['stage']}.{m['block']}.{_BRANCH[m['branch']]}" if m["stage"] else "stem.conv1"
    return f"{layer}{'.norm' if m['norm'] else ''}.{leaves[m['leaf']]}"


def convert_caffe2_backbone(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Caffe2 ResNet names -> ResNet-relative names (``stem.conv1.weight``, ``res2.0.conv1.norm.bias``, ...).

    Raises:
        ValueError: some names are not ResNet backbone tensors (Detectron detection models: FPN,
            RPN and box/mask heads are not converted); the message lists the first ones.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for name, value in state_dict.items():
        try:
            new = caffe2_to_resnet_name(name)
        except KeyError:
            unknown.append(name)
            continue
        if new is not None:
            out[new] = value
    if unknown:
        raise ValueError(
            f"{len(unknown)} Caffe2 tensor names are not ResNet backbone weights (e.g. {', '.join(sorted(unknown)[:5])}): "
            "only MSRA/Caffe2 ImageNet backbones (R-50.pkl, R-101.pkl) are converted, not Detectron (v1) "
            "detection models; use the detectron2 model-zoo version of the model instead"
        )
    return out


def to_detectron2_zoo_layout(state_dict: Mapping[str, Tensor], *, author: str) -> dict[str, Any]:
    """The detectron2 model-zoo ``.pkl`` layout of ``state_dict`` (detectron2 loads it as-is).

    Returns:
        ``{"model": {name: ndarray}, "__author__": author, "matching_heuristics": False}``; each
        array has the tensor's shape and dtype (bfloat16, which numpy lacks, is refused).
    """
    model = {}
    for name, value in state_dict.items():
        if value.dtype == torch.bfloat16:
            raise ValueError(f"{name}: bfloat16 tensors have no numpy dtype; convert the model to float32 first")
        model[name] = value.detach().cpu().numpy()
    return {"model": model, "__author__": author, "matching_heuristics": False}
