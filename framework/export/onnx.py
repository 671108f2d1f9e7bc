"""Translate a recorded program to ONNX with the dynamo-based exporter (onnxscript) and write it."""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from typing import Union

from torch.export import ExportedProgram

from framework.errors import ExportError, MissingDependencyError
from framework.export.diagnose import describe_onnx_failure
from framework.export.quiet import captured_output, log_captured
from framework.export.torch_export import example_image

__all__ = ["ONNX_OPSET", "write_onnx"]

logger = logging.getLogger(__name__)

#: The newest ONNX opset at which onnxruntime (1.32) has a CPU kernel for every operator of these
#: graphs: at opset 22 RoiAlign has none ("Could not find an implementation for RoiAlign(22)").
ONNX_OPSET = 21


def write_onnx(program: ExportedProgram, path: Union[str, os.PathLike], *, output_names: list[str],
               opset: int = ONNX_OPSET) -> None:
    """``torch.onnx.export(program, dynamo=True)`` at ``opset``, saved as one self-contained file.

    The input is named ``image`` with dynamic height and width (from ``program``'s dynamic shapes),
    the outputs ``output_names``. torchvision's ``nms`` and ``roi_align`` become ONNX's
    NonMaxSuppression and RoiAlign (onnxscript's torchvision translations).

    Raises:
        MissingDependencyError: onnx / onnxscript missing (``pip install 'framework[export]'``).
        ExportError: an operator without ONNX translation, naming it and the module it comes from.
    """
    import torch

    missing = [p for p in ("onnx", "onnxscript") if importlib.util.find_spec(p) is None]
    if missing:  # the exporter needs them; say so up front, with the extra that brings them
        raise MissingDependencyError(f"ONNX export needs {' and '.join(missing)}: pip install 'framework[export]'")
    failure = None
    with captured_output() as captured:  # what the exporter prints goes to DEBUG: a failure is one message
        try:
            with warnings.catch_warnings():
                # torchvision's fake NMS kernel uses a deprecated torch name; nothing for a user to act on
                warnings.filterwarnings("ignore", message=".*create_unbacked_symint.*", category=FutureWarning)
                onnx_program = torch.onnx.export(program, (example_image(),), dynamo=True, opset_version=opset,
                                                 input_names=["image"], output_names=list(output_names),
                                                 verbose=False)
        except Exception as e:
            failure = e
    log_captured(logger, "torch.onnx.export", captured)
    if failure is not None:
        raise ExportError(describe_onnx_failure(failure, program)) from failure
    onnx_program.save(os.fspath(path), external_data=False)
