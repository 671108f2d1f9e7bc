"""Thin wrappers over torch.nn layers."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["Conv2d"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm and an optional activation.

    Takes the arguments of ``nn.Conv2d`` plus two keyword arguments:

    Args:
        norm: a module applied after the convolution (e.g. from :func:`get_norm`), or None.
        activation: a callable applied last (e.g. ``F.relu``), or None.

    Keeping the norm as the ``norm`` child gives the state-dict names that detectron2
    checkpoints use (``conv1.weight``, ``conv1.norm.running_mean``, ...).

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H', W').
    """

    def __init__(self, *args: Any, norm: nn.Module | None = None, activation: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0 and self.training and isinstance(self.norm, nn.SyncBatchNorm):
            # SyncBatchNorm would hang or fail deep in a collective; say why here instead.
            raise ValueError("SyncBatchNorm does not support empty inputs in training")
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
