"""Model statistics: parameters and FLOPs per module, with fvcore (as detectron2's analysis tools).

fvcore traces the model with ``torch.jit.trace``, which needs tensors in and out;
:class:`TraceableInference` wraps a model's ``list[dict] -> list[{"instances": ...}]`` inference for
one image as ``image -> (boxes, scores, classes[, masks])``. FLOPs are counted as fvcore counts them:
one fused multiply-add is one flop (so "GFLOPs" here are GMACs), for convolutions, matmuls and
the ops fvcore knows; RoIAlign, NMS and elementwise ops are not counted.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["TraceableInference", "flop_count_inference", "parameter_table"]


class TraceableInference(nn.Module):
    """``model([inputs])`` on one image as a function of the image tensor alone.

    Args:
        model: a meta-architecture in eval mode.
        inputs: the per-image dict the model takes (``image`` (C, H, W) plus e.g. ``height``/``width``);
            its ``image`` is replaced by the traced argument.
    """

    def __init__(self, model: nn.Module, inputs: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.inputs = dict(inputs)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        instances = self.model([{**self.inputs, "image": image}])[0]["instances"]
        out = [instances.pred_boxes.tensor, instances.scores, instances.pred_classes]
        if instances.has("pred_masks"):
            out.append(instances.pred_masks)
        return tuple(out)


def flop_count_inference(model: nn.Module, inputs: Mapping[str, Any]):
    """An fvcore ``FlopCountAnalysis`` of ``model``'s inference on one image (quiet about the ops it
    does not count and the modules inference does not call)."""
    from fvcore.nn import FlopCountAnalysis

    wrapper = TraceableInference(model.eval(), inputs)
    analysis = FlopCountAnalysis(wrapper, (inputs["image"],))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():  # tracing data-dependent code (NMS, top-k) warns on every branch
        warnings.simplefilter("ignore")
        analysis.total()
    return analysis


def parameter_table(model: nn.Module, *, max_depth: int = 3) -> str:
    """Markdown table of parameter counts per module, ``max_depth`` deep (fvcore)."""
    from fvcore.nn import parameter_count_table

    return parameter_count_table(model, max_depth=max_depth)
