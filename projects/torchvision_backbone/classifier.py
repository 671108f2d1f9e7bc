"""A torchvision classification model by name, randomly initialised or from a local state-dict file.

Never downloads: builders are always called with ``weights=None``, and pretrained weights come
only from a file the user points to (saved with ``torch.save(model.state_dict(), path)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
import torchvision
from torch import nn

from framework.errors import ConfigError, did_you_mean

__all__ = ["classification_model_names", "build_classifier", "load_classifier_weights"]


def classification_model_names() -> list[str]:
    """Builder names of torchvision's classification models (not detection / segmentation / video)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_classifier(model_name: str, builder_kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """``torchvision.models.get_model(model_name, weights=None, **builder_kwargs)``, with clear errors.

    Raises:
        ConfigError: an unknown name (with the closest valid ones and the full list), or
            ``builder_kwargs`` the builder refuses.
    """
    names = classification_model_names()
    if model_name not in names:
        raise ConfigError(
            f"TorchvisionBackbone model_name={model_name!r} is not a torchvision classification model."
            f"{did_you_mean(model_name, names)} Valid names: {', '.join(names)}."
        )
    kwargs = dict(builder_kwargs or {})
    if "weights" in kwargs:
        raise ConfigError(
            "TorchvisionBackbone builder_kwargs may not set 'weights' (nothing is downloaded); "
            "save the weights to a file and set weights_path"
        )
    try:
        try:
            return torchvision.models.get_model(model_name, weights=None, **kwargs)
        except NotImplementedError:
            if torch.get_default_device().type != "meta":
                raise
            # Builders that compute their layout with tensors (RegNet) cannot run on the meta device.
            with torch.device("cpu"):
                return torchvision.models.get_model(model_name, weights=None, **kwargs).to("meta")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"TorchvisionBackbone builder_kwargs={kwargs} for {model_name!r}: {e}") from e


def load_classifier_weights(model: nn.Module, weights_path: str, *, model_name: str) -> None:
    """Load a torchvision state-dict file into ``model`` (strictly: every key, every shape).

    Raises:
        ConfigError: the file is missing, is not a state dict, or is for another architecture
            (naming a few missing / unexpected keys).
    """
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"TorchvisionBackbone weights_path={weights_path!r}: file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"TorchvisionBackbone weights_path={weights_path!r} does not hold a state dict (name -> tensor); "
            f"save one with torch.save(torchvision.models.{model_name}().state_dict(), path)"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ConfigError(
            f"TorchvisionBackbone weights_path={weights_path!r} is not a state dict of torchvision's {model_name!r}: "
            f"{len(missing)} missing keys {missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}, "
            f"{len(wrong)} shape mismatches {wrong[:4]}"
        )
    model.load_state_dict(state)
