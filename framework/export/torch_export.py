"""Record an :class:`ExportablePredictor` with ``torch.export`` and write it as a ``.pt2`` file."""

from __future__ import annotations

import os
from typing import Any, Union

import torch
from torch.export import Dim, ExportedProgram

from framework.errors import ExportError
from framework.export.diagnose import describe_export_failure

__all__ = ["EXAMPLE_SIZE", "dynamic_shapes", "example_image", "export_program", "save_program"]

#: (H, W) of the image the graph is recorded with. Its content and size do not matter (H and W are
#: dynamic); it is not square, so that no code path equates height and width.
EXAMPLE_SIZE = (240, 320)


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
    would have to re-trace.

    Raises:
        ExportError: naming the module and the operation that could not be recorded.
    """
    example = example_image() if example is None else example
    try:
        with torch.no_grad():
            return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(), strict=False)
    except Exception as e:  # torch raises many types; each becomes one message naming module and op
        raise ExportError(describe_export_failure(e, module)) from e


def save_program(program: ExportedProgram, path: Union[str, os.PathLike]) -> None:
    """Write ``program`` with ``torch.export.save``; ``torch.export.load(path).module()`` runs it."""
    torch.export.save(program, os.fspath(path))
