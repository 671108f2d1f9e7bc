#!/usr/bin/env python
"""Convert a weights file to this framework's ``.pth`` or to a detectron2 model-zoo ``.pkl``.

    python tools/convert_checkpoint.py --input model_final_f10217.pkl --output mask_rcnn_R_50_FPN_3x.pth
    python tools/convert_checkpoint.py --input outputs/run/model_final.pth --output model_final.pkl
    python tools/convert_checkpoint.py --input R-50.pkl --output R-50.pth model=mask_rcnn_R_50_FPN

Inputs: anything :meth:`framework.checkpoint.Checkpointer.load` reads (ours, detectron2 ``.pkl`` /
``.pth``, MSRA/Caffe2 ImageNet backbones, torchvision state dicts), read without running code from
the file. Outputs hold the model's weights only (no optimizer or trainer state):

* ``pth``: ``{"model": {name: Tensor}}``, loadable with ``weights=`` here;
* ``pkl``: ``{"model": {name: ndarray}, "__author__": ..., "matching_heuristics": False}``, the layout
  of detectron2's model zoo, which detectron2 loads as it is.

Trailing arguments are config overrides naming the target model (as for tools/train_net.py). They
are needed for files whose names depend on it (backbone-only files are placed under the model's
ResNet; torchvision detectors are mapped to its classes) and, when given, the converted weights are
checked against that model (a report of missing / unexpected / mismatched keys is printed).
The output is written atomically. Errors print one message and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from typing import Mapping, Optional

import torch

from framework.utils.cli import add_projects_flag, use_projects_flag

__all__ = ["convert_file", "main"]


def convert_file(
    input_path: str,
    output_path: str,
    *,
    fmt: Optional[str] = None,
    model: Optional[torch.nn.Module] = None,
    skip_mismatch: bool = False,
) -> str:
    """Convert ``input_path`` to ``output_path``; return the input's format description.

    Args:
        fmt: ``"pth"`` or ``"pkl"``; default: the output's extension.
        model: the target model; checked against the converted weights when given.
        skip_mismatch: accept weights of another shape in that check (they are written as they are).
    """
    from framework.checkpoint import atomic_write, convert_to_framework, load_checkpoint_file, load_weights
    from framework.checkpoint.detectron2 import to_detectron2_zoo_layout

    fmt = fmt or os.path.splitext(output_path)[1].lstrip(".")
    if fmt not in ("pth", "pkl"):
        raise ValueError(f"--format {fmt!r}: must be 'pth' or 'pkl' (or an --output ending in .pth / .pkl)")
    model_state_dict: Mapping[str, torch.Tensor] = model.state_dict() if model is not None else {}
    weights, source = convert_to_framework(load_checkpoint_file(input_path)["model"], model_state_dict)
    if model is not None:
        load_weights(model, input_path, skip_mismatch=skip_mismatch)  # raises if the weights do not fit
    if fmt == "pth":
        atomic_write(output_path, lambda f: torch.save({"model": dict(weights)}, f))
    else:
        author = f"framework tools/convert_checkpoint.py from {os.path.basename(input_path)} ({source})"
        layout = to_detectron2_zoo_layout(weights, author=author)
        atomic_write(output_path, lambda f: pickle.dump(layout, f, protocol=pickle.DEFAULT_PROTOCOL))
    return source


def _build_model(overrides: list[str]) -> torch.nn.Module:
    from framework.config.compose import compose
    from framework.registry import META_ARCHITECTURES

    cfg = compose(overrides)
    return META_ARCHITECTURES.build(cfg.model, path="model")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--input", required=True, help="the file to convert (.pkl, .pth)")
    parser.add_argument("--output", required=True, help="the file to write")
    parser.add_argument("--format", choices=("pth", "pkl"), help="output format (default: the output's extension)")
    parser.add_argument(
        "--skip-mismatch", action="store_true", help="accept weights whose shape differs from the target model's"
    )
    add_projects_flag(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides of the target model, e.g. model=mask_rcnn_R_50_FPN")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from framework.checkpoint import IncompatibleCheckpointError, UnsafePickleError
    from framework.errors import ConfigError

    try:
        if not os.path.isfile(args.input):
            raise FileNotFoundError(f"--input {args.input!r}: no such file")
        use_projects_flag(args)
        model = _build_model(args.overrides) if args.overrides else None
        source = convert_file(args.input, args.output, fmt=args.format, model=model, skip_mismatch=args.skip_mismatch)
    except (ValueError, KeyError, FileNotFoundError, UnsafePickleError, IncompatibleCheckpointError, ConfigError) as e:
        hint = ""
        if not args.overrides and "cannot place ResNet backbone weights" in str(e):
            hint = "\nName the target model after the options, e.g. model=mask_rcnn_R_50_FPN"
        print(f"Error: {e}{hint}", file=sys.stderr)
        return 2
    print(f"Wrote {args.output} from {args.input} ({source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
