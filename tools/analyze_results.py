#!/usr/bin/env python
"""Where the AP goes: TIDE's error breakdown (Bolya et al., ECCV 2020) of COCO-format results.

    python tools/analyze_results.py outputs/<date>/<time>             # a run's last evaluation
    python tools/analyze_results.py --gt instances_val2017.json --dt coco_instances_results.json --out analysis/
    python tools/analyze_results.py RUN_DIR --tasks bbox               # boxes only

For boxes (``bbox``) and masks (``segm``, when the results carry them): AP50 as TIDE computes it,
and the AP50 points lost to classification (cls), localization (loc), both, duplicate (dupe),
background (bkg) and missed-object (miss) errors, plus the false-positive / false-negative totals
(FP, FN); foreground IoU 0.5, background IoU 0.1. See docs/evaluation.md.

A run directory gives its ``inference/coco_instances_results.json`` and the ground truth the
evaluator scored it against (``inference/coco_ground_truth.json``; for older runs, the test set
rebuilt from ``config.yaml``). Output (``--out``, default ``RUN_DIR/inference``): ``errors.json``,
``errors.md`` (the table, also printed) and ``errors.png`` (a bar chart).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from framework.utils.cli import add_traceback_flag, run_tool

logger = logging.getLogger("analyze_results")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", help="a run directory of tools/train_net.py (its last evaluation)")
    parser.add_argument("--gt", help="COCO ground-truth json (instead of RUN_DIR; with --dt and --out)")
    parser.add_argument("--dt", help="COCO results json, e.g. coco_instances_results.json")
    parser.add_argument("--out", help="folder for errors.json, errors.md and errors.png (default: RUN_DIR/inference)")
    parser.add_argument("--tasks", nargs="+", choices=("bbox", "segm"),
                        help="default: bbox, and segm when the results carry masks")
    add_traceback_flag(parser)
    args = parser.parse_args(argv)
    if args.run_dir and (args.gt or args.dt):
        parser.error("give either RUN_DIR or --gt and --dt, not both")
    if not args.run_dir and not (args.gt and args.dt and args.out):
        parser.error("give RUN_DIR, or --gt GT.json --dt RESULTS.json --out DIR")
    return args


def run(args: argparse.Namespace) -> int:
    from framework.evaluation.error_analysis import analyze_errors
    from framework.evaluation.error_report import errors_markdown, write_error_report

    if args.run_dir:
        from framework.engine.evaluation_files import INFERENCE_DIR, last_evaluation_files

        files = last_evaluation_files(args.run_dir)
        gt, results, gt_source = files.ground_truth, files.results, files.ground_truth_source
        out = Path(args.out) if args.out else Path(args.run_dir) / INFERENCE_DIR
    else:
        gt, results, gt_source, out = args.gt, Path(args.dt), f"'{args.gt}'", Path(args.out)
    start = time.perf_counter()
    breakdown = analyze_errors(gt=gt, results=results, tasks=args.tasks)
    logger.info(f"Analyzed {', '.join(breakdown)} in {time.perf_counter() - start:.2f} s (reading the files included)")
    sources = f"Ground truth: {gt_source}; results: '{results}'."
    paths = write_error_report(breakdown, out, sources=sources)
    print(errors_markdown(breakdown, sources=sources))
    print(f"Wrote {', '.join(p.name for p in paths.values())} to {out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
