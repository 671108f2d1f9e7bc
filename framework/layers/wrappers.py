"""Thin wrappers over torch.nn layers."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from framework.layers.batch_norm import fold_into_conv

__all__ = ["Conv2d"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm and an optional activation.

    Takes the arguments of ``nn.Conv2d`` plus two keyword arguments:

    Args:
        norm: a module applied after the convolution (e.g. from :func:`get_norm`), or None.
        activation: a callable applied last (e.g. ``F.relu``), or None.

    Keeping the norm as the ``norm`` child gives the state-dict names that detectron2
    checkpoints use (``conv1.weight``, ``conv1.norm.running_mean``, ...).

    A fixed norm (FrozenBatchNorm2d, or BatchNorm2d in eval mode) is folded into the convolution's
    weight and bias at each call (:func:`~framework.layers.batch_norm.fold_into_conv`): one pass
    over the output instead of two, the same result up to float rounding
    (tests/layers/test_batch_norm.py: rtol and atol 1e-5; gradients rtol 1e-4, atol 1e-5), and
    gradients still reach ``weight`` and ``bias``. The parameters and the state dict are not
    changed. A norm with forward hooks (e.g. one that records its input) is run as its own module
    instead, so that its hooks see what they expect.

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H', W').
    """

    def __init__(self, *args: Any, norm: nn.Module | None = None, activation: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        # training first: at inference the count of RoIs may be symbolic (torch.export), never read
        if self.training and isinstance(self.norm, nn.SyncBatchNorm) and x.numel() == 0:
            # SyncBatchNorm would hang or fail deep in a collective; say why here instead.
            raise ValueError("SyncBatchNorm does not support empty inputs in training")
        folded = None if _has_hooks(self.norm) else fold_into_conv(self.norm, self.weight, self.bias)
        if folded is not None:
            x = self._conv_forward(x, *folded)
        else:
            x = self._conv_forward(x, self.weight, self.bias)
            if self.norm is not None:
                x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _has_hooks(module: nn.Module | None) -> bool:
    from torch.nn.modules import module as module_lib

    return module is not None and bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module_lib._global_forward_hooks
        or module_lib._global_forward_pre_hooks
    )
