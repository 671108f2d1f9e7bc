"""Identity forward, scaled backward: how Cascade R-CNN averages its stages' gradient on shared features."""

from __future__ import annotations

import torch

__all__ = ["scale_gradient"]


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it is multiplied by ``scale``.

    Summing S stages' losses while scaling the shared features' gradient by 1/S gives each stage's
    head its full gradient and the backbone the stages' mean (detectron2's ``_ScaleGradient``).
    """
    return _ScaleGradient.apply(x, scale)
