"""Optimizers: OPTIMIZERS components (``solver=SGD``, ``solver=AdamW``) with per-parameter-type weight
decay (detectron2's default param groups).

An OPTIMIZERS entry takes the model as its runtime argument and returns a ``torch.optim.Optimizer``;
a plugin adds one with ``@OPTIMIZERS.register()`` on such a function (see docs/configs.md).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from framework.errors import ConfigError
from framework.registry import OPTIMIZERS

__all__ = ["SGD", "AdamW", "build_optimizer", "get_default_param_groups", "is_norm_module"]

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


def _param_groups(model: nn.Module, base_lr: float, **settings: Any) -> list[dict[str, Any]]:
    if base_lr <= 0:
        raise ConfigError(f"config path 'solver.base_lr': must be > 0, got {base_lr}")
    groups = get_default_param_groups(model, base_lr=base_lr, **settings)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters to optimize (all frozen?)")
    return groups


@OPTIMIZERS.register("SGD")
def SGD(
    model: nn.Module,
    *,
    base_lr: float = 0.02,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 1e-4,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: Optional[float] = None,
    bias_lr_factor: float = 1.0,
    fused: bool = True,
) -> torch.optim.SGD:
    """``torch.optim.SGD`` with momentum over :func:`get_default_param_groups`.

    Defaults: detectron2's R-CNN recipe (lr 0.02 for a total batch of 16 images, momentum 0.9,
    weight decay 1e-4, none on norm layers).

    Args:
        model: the model whose trainable parameters are optimized (runtime).
        base_lr: learning rate before scheduling.
        weight_decay: L2 weight decay of ordinary parameters.
        weight_decay_norm: weight decay of norm-layer parameters (see :func:`is_norm_module`).
        weight_decay_bias: weight decay of biases; ``None``: the same as their layer's.
        bias_lr_factor: biases use ``base_lr * bias_lr_factor`` (a Detectron1 legacy; 1.0 disables it).
        fused: torch's fused implementation, one kernel per parameter instead of a few elementwise
            ops each (on a CPU the main job's AdamW step takes 3.5 ms instead of 15); false:
            torch's default (a loop over the parameters on a CPU, ``foreach`` on a GPU). The same
            update to float rounding, the same state dict, so either resumes the other's checkpoint.
    """
    groups = _param_groups(
        model, base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        weight_decay_bias=weight_decay_bias, bias_lr_factor=bias_lr_factor,
    )
    return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           fused=fused or None)


@OPTIMIZERS.register("AdamW")
def AdamW(
    model: nn.Module,
    *,
    base_lr: float = 1e-4,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.05,
    weight_decay_norm: float = 0.0,
    weight_decay_bias: Optional[float] = None,
    bias_lr_factor: float = 1.0,
    fused: bool = True,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` (decoupled weight decay) over :func:`get_default_param_groups`.

    Defaults: the usual detection recipe for AdamW (lr 1e-4, weight decay 0.05, none on norm
    layers), as in detectron2's ViTDet and mmdetection's transformer configs. The parameter-group
    knobs and ``fused`` mean what they mean for :func:`SGD`.
    """
    groups = _param_groups(
        model, base_lr, weight_decay=weight_decay, weight_decay_norm=weight_decay_norm,
        weight_decay_bias=weight_decay_bias, bias_lr_factor=bias_lr_factor,
    )
    return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                             fused=fused or None)


def build_optimizer(model: nn.Module, spec: Any, *, path: str = "solver") -> torch.optim.Optimizer:
    """The OPTIMIZERS component ``spec`` (a name, or a mapping with ``name`` and knobs: the ``solver``
    section of a run) built over ``model``'s parameters."""
    optimizer = OPTIMIZERS.build(spec, model=model, path=path)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"config path '{path}': {spec!r} built a {type(optimizer).__name__}, not a torch optimizer")
    return optimizer
