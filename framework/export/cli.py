"""The ``framework-export`` command (and ``tools/export_model.py``): a trained model as ONNX and/or torch.export.

    framework-export RUN_DIR --format onnx torch_export                # writes RUN_DIR/export/
    framework-export RUN_DIR --format onnx --output deploy/ model.roi_heads.box_predictor.test_score_thresh=0.3
    framework-export --format onnx --output deploy/ model=mask_rcnn_R_50_FPN dataset=coco weights=model_final_f10217.pkl

With a run directory (written by tools/train_net.py) the model is its ``config.yaml`` and its
best, else last checkpoint (``--checkpoint`` or ``weights=`` picks another); the overrides set keys
of that config. Without one, ``configs/train.yaml`` is composed with the overrides (config group
choices allowed) and ``weights=`` names the checkpoint. The output folder gets ``model.onnx`` /
``model.pt2`` and ``metadata.json`` (class names, inputs and outputs, the config); see
docs/deployment.md. Errors (a missing run directory, an unknown format, a module that does not
export) are one line and exit code 2; ``--traceback`` shows the traceback, ``--verbose`` what torch
printed while exporting.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from framework.utils.cli import UsageError, add_projects_flag, add_traceback_flag, run_tool

__all__ = ["main", "parse_args"]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="framework-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="[RUN_DIR] [key=value ...]",
                        help="a run directory (optional), then config overrides (weights=<file> without a run directory)")
    # No argparse choices: an unknown format is one line with the valid ones (ConfigError), like every other error.
    parser.add_argument("--format", nargs="+", default=["onnx"], metavar="FORMAT",
                        help="onnx and/or torch_export (default: onnx)")
    parser.add_argument("--output", help="output folder (default: RUN_DIR/export; required without a run directory)")
    parser.add_argument("--checkpoint", default="best", help="with a run directory: best, last or a path (default: best)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show what torch.export and the ONNX exporter print (logged at DEBUG)")
    add_traceback_flag(parser)
    add_projects_flag(parser)
    args = parser.parse_args(argv)
    first = args.args[0] if args.args else None
    args.run_dir = None if first is None or "=" in first else first
    args.overrides = args.args[1:] if args.run_dir is not None else list(args.args)
    return args


def run(args: argparse.Namespace) -> int:
    from framework.engine.predictor import find_checkpoint, load_run_config, resolve_metadata
    from framework.export.exporter import check_formats, export_model

    if args.verbose:
        logging.getLogger("framework.export").setLevel(logging.DEBUG)
    formats = check_formats(args.format)
    weights_overrides = [o.partition("=")[2] for o in args.overrides if o.partition("=")[0] == "weights"]
    others = [o for o in args.overrides if o.partition("=")[0] != "weights"]
    if args.run_dir is not None:
        run_dir = Path(args.run_dir)
        cfg = load_run_config(run_dir, others)
        weights = find_checkpoint(run_dir, weights_overrides[-1] if weights_overrides else args.checkpoint)
        output = Path(args.output) if args.output else run_dir / "export"
    else:
        from framework.config.compose import compose

        if not weights_overrides:
            raise UsageError("give the model: a run directory (framework-export RUN_DIR ...) or weights=<checkpoint file> "
                             "with config overrides (framework-export --output OUT model=... weights=...)")
        if not args.output:
            raise UsageError("--output OUT_DIR is needed without a run directory")
        weights = Path(weights_overrides[-1]).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(f"weights file {weights} not found (weights={weights_overrides[-1]!r})")
        cfg = compose(others)
        output = Path(args.output)
    written = export_model(cfg, weights, formats=formats, output_dir=output,
                           dataset=resolve_metadata(cfg))
    for fmt, info in written.items():
        print(f"{fmt}: {output / info['file']} ({info['seconds']} s)")
    print(f"metadata: {output / 'metadata.json'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
