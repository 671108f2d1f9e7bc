"""Record an :class:`ExportablePredictor` with ``torch.export`` and write it as a ``.pt2`` file."""

from __future__ import annotations

import logging
import os
from typing import Any, Union

import torch
import torchvision
from torch.export import Dim, ExportedProgram

from framework.errors import ExportError
from framework.export.diagnose import describe_export_failure
from framework.export.quiet import captured_output, log_captured

__all__ = ["EXAMPLE_SIZE", "dynamic_shapes", "example_image", "export_program", "save_program"]

logger = logging.getLogger(__name__)

#: (H, W) of the image the graph is recorded with. Its content and size do not matter (H and W are
#: dynamic); it is not square, so that no code path equates height and width.
EXAMPLE_SIZE = (240, 320)


def _fake_nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision::nms on symbolic tensors: a kept-index vector of unknown length >= 0.

    torchvision's own fake kernel (0.29) makes that length with the deprecated
    ``create_unbacked_symint``, whose minimum is 2: torch.export then records a runtime assertion
    "kept >= 2" after every NMS, and an image with fewer detections per class fails in the
    exported program. This is the same kernel with a minimum of 0; eager NMS is not affected
    (fake kernels only run while a graph is recorded).
    """
    torch._check(dets.dim() == 2 and dets.size(1) == 4, lambda: f"boxes should be (N, 4), got {tuple(dets.shape)}")
    torch._check(scores.dim() == 1 and dets.size(0) == scores.size(0),
                 lambda: f"scores should be (N,) for (N, 4) boxes, got {tuple(scores.shape)}")
    num_to_keep = torch.library.get_ctx().new_dynamic_size(min=0)
    return dets.new_empty(num_to_keep, dtype=torch.long)


assert torchvision.ops.nms  # torchvision::nms is registered before its fake kernel is replaced
torch.library.register_fake("torchvision::nms", _fake_nms, allow_override=True)


def example_image(size: tuple[int, int] = EXAMPLE_SIZE, *, seed: int = 0) -> torch.Tensor:
    """An (H, W, 3) uint8 image of noise to record the graph with."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=generator)


def dynamic_shapes() -> dict[str, Any]:
    """The ``image`` input's height and width are dynamic (at least 2 pixels: torch.export treats
    sizes 0 and 1 as special cases)."""
    return {"image": {0: Dim("height", min=2), 1: Dim("width", min=2)}}


def export_program(module: torch.nn.Module, *, example: torch.Tensor | None = None) -> ExportedProgram:
    """``torch.export`` of ``module`` (an :class:`~framework.export.module.ExportablePredictor`).

    Non-strict mode (the model's Python runs as is, on symbolic tensors); under ``no_grad``, so that
    the model's own ``@torch.no_grad()`` does not become a sub-graph that the ONNX translation
    would have to re-trace. What torch prints meanwhile (on a failure, a partial graph) is logged at
    DEBUG instead (:mod:`framework.export.quiet`), so that a failure is one message.

    Raises:
        ExportError: naming the module and the operation that could not be recorded.
    """
    example = example_image() if example is None else example
    failure = None
    with captured_output() as captured:
        try:
            with torch.no_grad():
                program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(), strict=False)
        except Exception as e:  # torch raises many types; each becomes one message naming module and op
            failure = e
    log_captured(logger, "torch.export", captured)
    if failure is not None:
        raise ExportError(describe_export_failure(failure, module)) from failure
    return program


def save_program(program: ExportedProgram, path: Union[str, os.PathLike]) -> None:
    """Write ``program`` with ``torch.export.save``; ``torch.export.load(path).module()`` runs it."""
    torch.export.save(program, os.fspath(path))
