"""Export one model to the requested formats and write metadata.json: what tools/export_model.py runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from framework.data.catalog import Metadata
from framework.errors import ConfigError, did_you_mean
from framework.export.build import build_exportable, export_config
from framework.export.metadata import MODEL_FILES, write_metadata
from framework.export.module import OUTPUT_NAMES

__all__ = ["FORMATS", "export_model", "check_formats"]

logger = logging.getLogger(__name__)

#: The formats tools/export_model.py writes: ONNX (onnxruntime) and torch.export's .pt2.
FORMATS = tuple(MODEL_FILES)


def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, deduplicated in order; a ConfigError naming an unknown one and the valid ones."""
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"--format {f!r} is not an export format; valid: {', '.join(FORMATS)}.{did_you_mean(f, FORMATS)}")
    return list(dict.fromkeys(formats))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "framework"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def export_model(cfg: DictConfig, weights: Path, *, formats: Sequence[str], output_dir: Path,
                 dataset: Metadata) -> dict[str, dict]:
    """Build the model of ``cfg`` with ``weights``, record it once with torch.export, write each of
    ``formats`` into ``output_dir`` (``model.onnx``, ``model.pt2``) and ``metadata.json`` (with the
    class names and category ids of ``dataset``, the config's test dataset).

    Returns:
        per format ``{"file": name, "seconds": export time, ...}`` (as in metadata.json).
    Raises:
        ExportError: a module or operation that does not export (named); ConfigError: bad formats/config.
    """
    from framework.export.onnx import ONNX_OPSET, write_onnx
    from framework.export.torch_export import export_program, save_program

    formats = check_formats(formats)
    cfg = export_config(cfg)
    module = build_exportable(cfg, weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = list(OUTPUT_NAMES if module.mask_on else OUTPUT_NAMES[:3])
    start = time.perf_counter()
    program = export_program(module)
    record_s = time.perf_counter() - start
    logger.info(f"Recorded the model with torch.export in {record_s:.1f} s")
    written: dict[str, dict] = {}
    for fmt in formats:
        target = output_dir / MODEL_FILES[fmt]
        start = time.perf_counter()
        if fmt == "torch_export":
            save_program(program, target)
            written[fmt] = {"file": target.name, "seconds": round(record_s + time.perf_counter() - start, 1)}
        else:
            write_onnx(program, target, output_names=names)
            written[fmt] = {"file": target.name, "opset": ONNX_OPSET,
                            "seconds": round(record_s + time.perf_counter() - start, 1)}
        logger.info(f"Wrote {target} ({written[fmt]['seconds']} s including the torch.export recording)")
    write_metadata(output_dir, cfg=cfg, dataset=dataset, weights=str(weights), formats=written,
                   mask_on=module.mask_on, versions=_versions())
    return written
