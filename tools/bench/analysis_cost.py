#!/usr/bin/env python
"""What the COCO evaluator's analysis (``evaluators.coco.analysis``, on by default) costs at one
evaluation: the run's evaluation (inference over the test set + COCOeval) timed with the analysis
off and on, alternating, and the analysis alone (TIDE matching and dAPs, errors.* files,
pr_curves_*.png, the TensorBoard PR curves put into an event storage as in training).

    python tools/bench/analysis_cost.py --weights outputs/<run>/model_final.pth      # the default job's evaluation
    python tools/bench/analysis_cost.py --coco-tiny                                   # coco_tiny val, see below
    python tools/bench/analysis_cost.py --weights W --gallery 8                       # with a gallery of 8 images

``--coco-tiny``: the default job's model with 80 classes on ../shared/data/coco_tiny val, untrained
and with score threshold 0, so that every image keeps 100 detections (the analysis' worst case: its
cost grows with the detections). Prints medians over ``--repeats`` evaluations of each kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

COCO_TINY = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco_tiny"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a checkpoint of the default job (else the model is untrained)")
    parser.add_argument("--coco-tiny", action="store_true", help="evaluate on coco_tiny val (80 classes, 100 detections per image)")
    parser.add_argument("--gallery", type=int, default=0, help="evaluators.coco.gallery_size of the 'on' evaluations")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="more config overrides")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    import logging

    import torch

    import framework.evaluation.coco_evaluation as coco_evaluation
    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_datasets, build_model
    from framework.engine.evaluation import build_evaluation
    from framework.utils.events import EventStorage

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = list(args.overrides)
    if args.coco_tiny:
        ann = COCO_TINY / "annotations"
        overrides += ["dataset=coco_json", f"dataset.train.json={ann / 'instances_train2017.json'}",
                      f"dataset.train.image_root={COCO_TINY / 'train2017'}", f"dataset.test.json={ann / 'instances_val2017.json'}",
                      f"dataset.test.image_root={COCO_TINY / 'val2017'}", "dataset.num_classes=80",
                      "model.roi_heads.box_predictor.test_score_thresh=0.0"]
    cfg_on = compose([*overrides, f"evaluators.coco.gallery_size={args.gallery}"])
    cfg_off = compose([*overrides, "evaluators.coco.analysis=false"])
    torch.manual_seed(0)
    data = build_datasets(cfg_on, need_train=False)
    model = build_model(cfg_on, torch.device("cpu"))
    if args.weights:
        Checkpointer(model, tempfile.gettempdir()).load(args.weights, checkpointables=[])

    analysis_times: list[float] = []
    original = coco_evaluation.analyze_evaluation  # timed where the evaluator calls it

    def timed(**kwargs):
        start = time.perf_counter()
        try:
            return original(**kwargs)
        finally:
            analysis_times.append(time.perf_counter() - start)

    coco_evaluation.analyze_evaluation = timed
    totals: dict[str, list[float]] = {"off": [], "on": []}
    detections = 0
    with tempfile.TemporaryDirectory() as tmp:
        evaluations = {"off": build_evaluation(cfg_off, model, data, Path(tmp) / "off"),
                       "on": build_evaluation(cfg_on, model, data, Path(tmp) / "on")}
        with EventStorage() as storage:  # as in training: the PR curves (and gallery) go into it
            for _ in range(args.repeats):
                for kind, evaluation in evaluations.items():
                    start = time.perf_counter()
                    evaluation()
                    totals[kind].append(time.perf_counter() - start)
                    storage.clear_pr_curves()
                    storage.clear_images()

        detections = len(json.loads((Path(tmp) / "on" / "inference" / "coco_instances_results.json").read_text()))
    off, on, alone = (statistics.median(v) for v in (totals["off"], totals["on"], analysis_times))
    print(f"test set {data.test_name}: {len(data.test)} images, {detections} detections; medians of {args.repeats}")
    print(f"evaluation, analysis off: {off:.2f} s")
    print(f"evaluation, analysis on:  {on:.2f} s" + (f" (gallery of {args.gallery})" if args.gallery else ""))
    print(f"analysis alone:           {alone:.3f} s = {100 * alone / on:.1f}% of the evaluation with it "
          f"({100 * alone / off:.1f}% of the evaluation without it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
