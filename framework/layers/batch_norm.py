"""Normalisation layers: FrozenBatchNorm2d and ``get_norm``, the name -> norm layer factory."""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from framework.errors import ConfigError, did_you_mean

__all__ = ["FrozenBatchNorm2d", "convert_frozen_batchnorm", "fold_into_conv", "get_norm", "NORMS"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters are fixed buffers, never trained.

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel, as
    ``nn.BatchNorm2d`` does in eval mode. All four tensors are buffers (not parameters), so they
    are saved in the state dict but never returned by ``parameters()``. The initial values
    (``running_var = 1 - eps``) make the layer the identity, which is what Caffe2-converted
    checkpoints that only carry ``weight`` and ``bias`` rely on.

    Args:
        num_features: number of channels C.
        eps: added to the variance for numerical stability.

    Shape:
        input (N, C, H, W) -> output (N, C, H, W).
    """

    # Version 2 added running_mean/var to the state dict; older checkpoints lack them.
    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            # torch.batch_norm (unlike F.batch_norm) has a backward for the input when all the
            # statistics are buffers; used when something upstream is trained.
            return torch.batch_norm(
                x,
                self.weight,
                self.bias,
                self.running_mean,
                self.running_var,
                False,
                0.1,
                self.eps,
                torch.backends.cudnn.enabled,
            )
        # Without gradients F.batch_norm is a single fused op.
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # Old (Caffe2-converted) checkpoints have only weight and bias: fill in identity stats
            # so that loading does not report them missing.
            if prefix + "running_mean" not in state_dict:
                state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
            if prefix + "running_var" not in state_dict:
                state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """See :func:`convert_frozen_batchnorm`."""
        return convert_frozen_batchnorm(module)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` / ``nn.SyncBatchNorm`` in ``module`` by a FrozenBatchNorm2d.

    The frozen copy keeps the current statistics, affine parameters and eps.

    Returns:
        a new FrozenBatchNorm2d if ``module`` itself is a batch norm; otherwise ``module``, with its
        descendants converted in place.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None:  # track_running_stats=False has none
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen.to(device=_device_of(module))
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


def fold_into_conv(
    norm: nn.Module | None, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor] | None:
    """A convolution's weight and bias with the fixed batch norm that follows it folded in.

    ``conv(x, w', b') == norm(conv(x, weight, bias))`` up to rounding, for
    ``w' = weight * s`` and ``b' = (bias - mean) * s + beta``, ``s = gamma / sqrt(var + eps)`` per
    output channel: the values ``torch.nn.utils.fusion.fuse_conv_bn_weights`` gives, bit for bit.
    That holds when the norm is a per-channel affine map: a FrozenBatchNorm2d, or an
    ``nn.BatchNorm2d`` in eval mode with running statistics. Both results are differentiable
    functions of ``weight`` and ``bias``, so a folded convolution still trains its weights.

    Args:
        norm: the norm after the convolution (any module, or None).
        weight: (C_out, C_in / groups, kh, kw) convolution weight.
        bias: (C_out,) convolution bias, or None.

    Returns:
        (w' of weight's shape and memory format, b' of shape (C_out,)), or None when ``norm`` is
        not a fixed per-channel affine map (no norm, GroupNorm, BatchNorm in training mode, ...).
    """
    if isinstance(norm, FrozenBatchNorm2d):
        gamma, beta = norm.weight, norm.bias
    elif (
        type(norm) is nn.BatchNorm2d  # not SyncBatchNorm or subclasses with their own forward
        and not norm.training
        and norm.running_mean is not None
    ):
        gamma = norm.weight if norm.affine else torch.ones_like(norm.running_var)
        beta = norm.bias if norm.affine else torch.zeros_like(norm.running_var)
    else:
        return None
    # The operations of torch.nn.utils.fusion.fuse_conv_bn_weights in its order, so that the folded
    # weights are bit-identical to what torch's own conv-BN fuser computes (which returns detached
    # Parameters, hence not usable while training).
    inv_std = torch.rsqrt(norm.running_var + norm.eps)
    conv_bias = torch.zeros_like(norm.running_mean) if bias is None else bias
    folded_weight = weight * (gamma * inv_std).reshape(-1, 1, 1, 1)
    folded_bias = (conv_bias - norm.running_mean) * inv_std * gamma + beta
    return folded_weight, folded_bias


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    # detectron2's "GN" always uses 32 groups.
    return nn.GroupNorm(32, channels, eps=eps)


#: Norm names accepted by :func:`get_norm` -> factory taking the number of channels (and ``eps=``).
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
}


def get_norm(
    norm: Union[str, Callable[[int], nn.Module], None], out_channels: int, *, eps: float | None = None
) -> nn.Module | None:
    """Build the normalisation layer named ``norm`` for ``out_channels`` channels.

    Args:
        norm: ``""`` or None (no norm), one of ``"BN"``, ``"SyncBN"``, ``"FrozenBN"``, ``"GN"``
            (32 groups), or a callable taking the channel count and returning a module.
        out_channels: number of channels C of the (N, C, H, W) tensors it will normalise.
        eps: the norm's epsilon, for a named norm (None: the layer's default, 1e-5).

    Returns:
        the norm module, or None for ``""`` / None.

    Raises:
        ConfigError: ``norm`` is an unknown name.
    """
    if norm is None or norm == "":
        return None
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ConfigError(
                f"unknown norm {norm!r}.{did_you_mean(norm, NORMS)} "
                f"Valid norms: {', '.join(repr(n) for n in NORMS)} or '' for none."
            )
        return NORMS[norm](out_channels) if eps is None else NORMS[norm](out_channels, eps=eps)
    return norm(out_channels)
