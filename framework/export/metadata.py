"""``metadata.json`` beside an exported model: what a deployment needs besides the graph.

Written by :func:`write_metadata`, read by :class:`framework.engine.predictor.Predictor` (its
``onnxruntime`` / ``torch_export`` backends) and by any deployment: the class names indexed by
the ``classes`` output, the input/output contract, the files per format, and the resolved config
the model was built from (so that the export can be reproduced).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf

from framework.data.catalog import Metadata

__all__ = ["METADATA_FILE", "MODEL_FILES", "io_contract", "write_metadata"]

METADATA_FILE = "metadata.json"
#: File name of each format in the output folder.
MODEL_FILES = {"onnx": "model.onnx", "torch_export": "model.pt2"}


def io_contract(*, mask_on: bool) -> dict[str, Any]:
    """The graph's inputs and outputs as metadata.json states them (names, dtypes, shapes)."""
    outputs = {
        "boxes": {"dtype": "float32", "shape": ["N", 4], "meaning": "XYXY boxes in the input image's pixels"},
        "scores": {"dtype": "float32", "shape": ["N"], "meaning": "detection scores, decreasing per class"},
        "classes": {"dtype": "int64", "shape": ["N"], "meaning": "contiguous class ids into class_names"},
    }
    if mask_on:
        outputs["masks"] = {"dtype": "uint8", "shape": ["N", "H", "W"], "meaning": "1 = foreground, at the input's size"}
    return {
        "inputs": {"image": {"dtype": "uint8", "shape": ["H", "W", 3], "channels": "RGB",
                             "meaning": "the image at its own size; resize and normalisation are in the graph"}},
        "outputs": outputs,
    }


def write_metadata(output_dir: Union[str, os.PathLike], *, cfg: DictConfig, dataset: Metadata, weights: str,
                   formats: dict[str, dict[str, Any]], mask_on: bool, versions: dict[str, str]) -> Path:
    """Write ``output_dir/metadata.json``.

    Formats exported earlier into the same folder from the same config and weights are kept in
    ``files``; an export of another model replaces the file (its models' entries go).

    Args:
        dataset: the test dataset's metadata: ``class_names`` (its ``thing_classes``) and, under
            ``dataset``, the colours and category ids (for COCO-format results).
        formats: per format just written, ``{"file": ..., "seconds": ..., ...}`` (opset for ONNX).
        versions: package versions the export ran with.
    """
    path = Path(output_dir) / METADATA_FILE
    config = OmegaConf.to_container(cfg, resolve=True)
    files: dict[str, Any] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
        if previous.get("config") == config and previous.get("weights") == weights:
            files.update(previous.get("files", {}))
    files.update(formats)
    described = {"name": dataset.name, "thing_colors": [list(c) for c in dataset.thing_colors],
                 "thing_dataset_id_to_contiguous_id": {str(k): v for k, v in dataset.thing_dataset_id_to_contiguous_id.items()}}
    data = {"class_names": list(dataset.thing_classes), **io_contract(mask_on=mask_on), "files": files,
            "dataset": described, "weights": weights, "versions": versions, "config": config}
    path.write_text(json.dumps(data, indent=2))
    return path
