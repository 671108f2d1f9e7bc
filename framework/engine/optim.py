"""Optimizer construction with per-parameter-type weight decay (detectron2's default param groups)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple

import torch
from torch import nn

from framework.errors import ConfigError, did_you_mean

__all__ = ["build_optimizer", "get_default_param_groups", "is_norm_module"]

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm and their subclasses
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def is_norm_module(module: nn.Module) -> bool:
    """True for torch's norm layers and any module whose class name contains ``Norm`` (FrozenBN,
    a plugin's own norm)."""
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


def get_default_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: Optional[float] = None,
    bias_lr_factor: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim`` with their own ``lr`` / ``weight_decay``.

    Each trainable parameter gets ``weight_decay``, except parameters of norm layers
    (``weight_decay_norm``); then parameters named ``bias`` get ``weight_decay_bias`` when it is not
    ``None`` and ``lr = base_lr * bias_lr_factor`` (detectron2's order: a norm's bias with
    ``weight_decay_bias`` set takes ``weight_decay_bias``). A parameter shared by several modules is
    counted once. Parameters with equal settings are merged into one group (in order of first
    appearance), which keeps the multi-tensor optimizer kernels fast.
    """
    seen: set[int] = set()
    groups: dict[tuple, list[nn.Parameter]] = {}
    for module in model.modules():
        norm = is_norm_module(module)
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            hp = {"lr": base_lr, "weight_decay": weight_decay_norm if norm else weight_decay}
            if pname == "bias":
                if weight_decay_bias is not None:
                    hp["weight_decay"] = weight_decay_bias
                hp["lr"] = base_lr * bias_lr_factor
            groups.setdefault(tuple(sorted(hp.items())), []).append(param)
    return [{**dict(key), "params": params} for key, params in groups.items()]


def build_optimizer(
    model: nn.Module,
    *,
    name: Literal["SGD", "AdamW"] = "SGD",
    base_lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: Optional[float] = None,
    bias_lr_factor: float = 1.0,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Build an SGD or AdamW optimizer over the trainable parameters of ``model``.

    Args:
        model: the model whose trainable parameters are optimized.
        name: ``"SGD"`` (uses ``momentum``, ``nesterov``) or ``"AdamW"`` (uses ``betas``, ``eps``).
        base_lr: learning rate before scheduling.
        weight_decay: L2 / decoupled weight decay of ordinary parameters.
        weight_decay_norm: weight decay of norm-layer parameters (see :func:`is_norm_module`).
        weight_decay_bias: weight decay of biases; ``None``: the same as their layer's.
        bias_lr_factor: biases use ``base_lr * bias_lr_factor`` (a Detectron1 legacy; 1.0 disables it).
    """
    if name not in ("SGD", "AdamW"):
        raise ConfigError(f"optimizer name {name!r} is not one of ['SGD', 'AdamW'].{did_you_mean(name, ['SGD', 'AdamW'])}")
    if base_lr <= 0:
        raise ConfigError(f"optimizer base_lr must be > 0, got {base_lr}")
    groups = get_default_param_groups(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_bias=weight_decay_bias,
        bias_lr_factor=bias_lr_factor,
    )
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters to optimize (all frozen?)")
    if name == "SGD":
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
