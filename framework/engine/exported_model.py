"""Run a model written by tools/export_model.py (``model.onnx`` / ``model.pt2`` + ``metadata.json``).

The exported graph is the whole predictor (resize, normalisation, model, post-processing), so
running it is: an (H, W, 3) uint8 RGB image in, ``boxes``, ``scores``, ``classes`` (and ``masks``)
out. :class:`framework.engine.predictor.Predictor` uses this for its ``onnxruntime`` and
``torch_export`` backends; this module reads the files only and never imports framework.export.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch

from framework.data.catalog import Metadata
from framework.errors import MissingDependencyError

__all__ = ["BACKENDS", "ExportedModel", "METADATA_FILE"]

#: The backends of :class:`framework.engine.predictor.Predictor`: the model in Python, or an export.
BACKENDS = ("eager", "onnxruntime", "torch_export")
METADATA_FILE = "metadata.json"
#: Which exported format each backend runs.
_FORMAT = {"onnxruntime": "onnx", "torch_export": "torch_export"}


class ExportedModel:
    """An exported model and its metadata, run by onnxruntime or by torch.export's loader.

    Args:
        folder: the export's output folder (holds ``metadata.json`` and the model files).
        backend: ``"onnxruntime"`` (``model.onnx``, CPU execution provider) or ``"torch_export"``
            (``model.pt2``, ``torch.export.load(...).module()``).

    Call: ``model(image)`` with an (H, W, 3) uint8 RGB numpy array -> dict of tensors ``boxes``
    (N, 4) float32, ``scores`` (N,), ``classes`` (N,) int64 and, with a mask head, ``masks``
    (N, H, W) uint8.

    Raises (construction):
        FileNotFoundError: no metadata.json, or no file of this backend's format (naming the
            command that writes it).
        MissingDependencyError: onnxruntime missing (``pip install 'framework[export]'``).
    """

    def __init__(self, folder: Union[str, os.PathLike], *, backend: Literal["onnxruntime", "torch_export"]) -> None:
        if backend not in _FORMAT:
            raise ValueError(f"ExportedModel backend must be one of {list(_FORMAT)}, got {backend!r}")
        self.folder = Path(folder).expanduser()
        self.backend = backend
        meta_file = self.folder / METADATA_FILE
        fmt = _FORMAT[backend]
        write = f"tools/export_model.py RUN_DIR --format {fmt} --output {self.folder}"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} not found: {self.folder} holds no export (write one with {write})")
        self.metadata_json: dict[str, Any] = json.loads(meta_file.read_text())
        entry = self.metadata_json.get("files", {}).get(fmt)
        if entry is None or not (self.folder / entry["file"]).is_file():
            raise FileNotFoundError(f"{self.folder} has no {fmt} model for backend={backend!r} "
                                    f"(it has {sorted(self.metadata_json.get('files', {}))}); write it with {write}")
        self.path = self.folder / entry["file"]
        self.output_names = list(self.metadata_json["outputs"])
        if backend == "onnxruntime":
            try:
                import onnxruntime
            except ImportError as e:
                raise MissingDependencyError(
                    "backend='onnxruntime' needs onnxruntime: pip install 'framework[export]'") from e
            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        else:
            importlib.import_module("torchvision")  # registers torchvision::nms / roi_align, which the program calls
            self._module = torch.export.load(str(self.path)).module()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the model was exported from."""
        return self.metadata_json["config"]

    @property
    def metadata(self) -> Metadata:
        """The class names (indexed by ``classes``), colours and dataset category ids of the export."""
        dataset = self.metadata_json.get("dataset", {})
        ids = {int(k): int(v) for k, v in dataset.get("thing_dataset_id_to_contiguous_id", {}).items()}
        return Metadata(name=str(dataset.get("name", "exported")), thing_classes=list(self.metadata_json["class_names"]),
                        thing_colors=[tuple(c) for c in dataset.get("thing_colors", [])],
                        thing_dataset_id_to_contiguous_id=ids)

    def __repr__(self) -> str:
        return f"ExportedModel({self.path}, backend={self.backend!r})"

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an exported model takes an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        if self.backend == "onnxruntime":
            outputs = [torch.from_numpy(o) for o in self._session.run(None, {"image": image})]
        else:
            with torch.no_grad():
                outputs = list(self._module(torch.from_numpy(image)))
        return dict(zip(self.output_names, outputs))
