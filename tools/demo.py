#!/usr/bin/env python
"""Run a trained model on images; write one drawn PNG per image (and optionally COCO-format json).

    python tools/demo.py --input photos/ --output vis/ weights=outputs/<date>/<time>/model_final.pth
    python tools/demo.py --input "photos/*.jpg" --output vis/ --run outputs/<date>/<time> --json
    python tools/demo.py --input a.jpg --output vis/ model=mask_rcnn_R_50_FPN dataset=coco weights=model.pkl
    python tools/demo.py --input photos/ --output vis/ --run outputs/<date>/<time> --backend onnxruntime
    python tools/demo.py --input photos/ --output vis/ --export deploy/ --backend torch_export

Which config builds the model: ``--run DIR`` takes that run's ``config.yaml`` (and its best, else
last checkpoint, unless ``weights=`` names another); without ``--run``, a ``weights=`` file inside a
run directory (next to a ``config.yaml``) takes that run's config; otherwise ``configs/train.yaml`` is
composed with the overrides. On a run's config the overrides set keys
(``input.test.augmentations.0.short_edge_length=[320]``); ``--no-run-config`` composes ``configs/train.yaml`` even for weights inside a run directory.
``--backend onnxruntime`` / ``torch_export`` runs the model that tools/export_model.py wrote (into
``RUN/export`` for ``--run RUN``, or the folder ``--export DIR``) instead of the model in Python.

Output: ``<output>/<image stem>.png`` (masks, boxes, class names and scores of the detections with
score >= ``--score-thresh``); with ``--json``, ``<output>/coco_instances_results.json``: those
detections in COCO results format, ``image_id`` being the file stem when it is a number, else the
position of the image in the sorted input list.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from framework.utils.cli import ImageLoop, UsageError, add_projects_flag, add_traceback_flag, run_tool

logger = logging.getLogger("demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders and/or glob patterns")
    parser.add_argument("--output", required=True, help="folder for the drawn PNGs (and the json)")
    parser.add_argument("--run", help="run directory of tools/train_net.py: its config.yaml and checkpoint")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="draw/write detections scoring at least this")
    parser.add_argument("--json", action="store_true", help="also write coco_instances_results.json")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--backend", default="eager", help="eager (default), onnxruntime or torch_export: "
                        "run the export of --run (RUN/export) or of --export DIR")
    parser.add_argument("--export", help="the folder tools/export_model.py wrote (for --backend onnxruntime/torch_export)")
    parser.add_argument("--no-run-config", action="store_true",
                        help="compose configs/train.yaml even when weights= lies in a run directory")
    add_traceback_flag(parser)
    add_projects_flag(parser)
    parser.add_argument("overrides", nargs="*", help="weights=<file> and Hydra-style config overrides")
    return parser.parse_args(argv)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Image files named by ``patterns`` (files, folders: their image files, globs), sorted, without repeats."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            found += [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        elif path.is_file():
            found.append(path)
        else:
            found += [Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file()]
    unique = sorted({p.resolve(): p for p in found}.values())
    if not unique:
        raise UsageError(f"no images matched --input {' '.join(patterns)} (expected image files, folders of "
                         f"{'/'.join(IMAGE_EXTENSIONS)} images, or glob patterns such as 'photos/*.jpg')")
    return unique


def output_names(paths: list[Path]) -> list[str]:
    """``<stem>.png`` per path; a stem seen before gets ``_2``, ``_3``, ... so that no output overwrites another."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        names.append(f"{p.stem}.png" if seen[p.stem] == 1 else f"{p.stem}_{seen[p.stem]}.png")
    return names


def build_predictor(args: argparse.Namespace):
    """The Predictor the command line describes (see the module docstring for which config is used)."""
    from framework.engine.predictor import Predictor

    if args.backend != "eager" or args.export:
        from framework.engine.exported_model import BACKENDS
        from framework.errors import did_you_mean

        if args.backend not in BACKENDS or args.backend == "eager":
            valid = [b for b in BACKENDS if b != "eager"]
            raise UsageError(f"--backend {args.backend!r} cannot run an export; valid: {', '.join(valid)}."
                             f"{did_you_mean(args.backend, valid)}")
        if args.overrides:  # the export fixed the config; nothing a key=value could change is left
            raise UsageError(f"--backend {args.backend} runs an exported model, whose config was fixed when it was "
                             f"exported: drop {' '.join(args.overrides)} (or export again with them)")
        if args.export:
            return Predictor.from_export(args.export, backend=args.backend)
        if not args.run:
            raise UsageError(f"--backend {args.backend} runs an export: give --run RUN (its RUN/export) or --export DIR")
        return Predictor.from_run(args.run, backend=args.backend)
    weights = [o.partition("=")[2] for o in args.overrides if o.partition("=")[0] == "weights"]
    others = [o for o in args.overrides if o.partition("=")[0] != "weights"]
    checkpoint = weights[-1] if weights else None
    run_dir = Path(args.run) if args.run else None
    if run_dir is None and checkpoint and not args.no_run_config and (Path(checkpoint).parent / "config.yaml").is_file():
        run_dir = Path(checkpoint).parent
        logger.info(f"Using the config of run {run_dir} (weights= lies in it; --no-run-config to compose instead)")
    if run_dir is not None:
        return Predictor.from_run(run_dir, checkpoint=checkpoint or "best", device=args.device, overrides=others)
    if not checkpoint:
        raise UsageError("give the model: weights=<checkpoint file> or --run <run directory>")
    return Predictor.from_config(others, weights=checkpoint, device=args.device)


def image_id_of(path: Path, index: int) -> int:
    return int(path.stem) if path.stem.isdigit() else index


def run(args: argparse.Namespace) -> int:
    from torchvision.transforms.v2.functional import to_pil_image

    from framework.data.detection_utils import ImageReadError, read_image
    from framework.evaluation.coco_evaluation import RESULTS_FILE_NAME, instances_to_coco_json
    from framework.utils.visualizer import draw_instances

    paths = expand_inputs(args.input)
    names = dict(zip(paths, output_names(paths)))
    predictor = build_predictor(args)
    meta = predictor.metadata
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    # The image is decoded here to be drawn on; the predictor reads the file as the evaluation does.
    loop = ImageLoop(paths, lambda p: read_image(p, "RGB"), desc="demo", errors=(ImageReadError,))
    for index, path, image in loop:
        instances = predictor(path)
        instances = instances[instances.scores >= args.score_thresh]  # the same detections drawn and in the json
        drawn = draw_instances(image, instances, class_names=meta.thing_classes, colors=meta.thing_colors,
                               score_thresh=0.0, label_background=True)
        to_pil_image(drawn).save(output / names[path])
        if args.json:
            results += instances_to_coco_json(instances, image_id_of(path, index), meta.contiguous_id_to_dataset_id)
    if args.json:
        (output / RESULTS_FILE_NAME).write_text(json.dumps(results))
    print(f"Wrote {loop.done} image(s) to {output}"
          + (f" and {len(results)} detections to {RESULTS_FILE_NAME}" if args.json else "") + loop.skipped_note())
    if loop.done == 0:
        raise UsageError(f"none of the {len(paths)} input image(s) could be read")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
