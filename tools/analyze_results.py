#!/usr/bin/env python
"""Where the AP goes: TIDE's error breakdown (Bolya et al., ECCV 2020) of COCO-format results, the
precision-recall curves, and a gallery of the images that lose the most.

    python tools/analyze_results.py outputs/<date>/<time>             # a run's last evaluation
    python tools/analyze_results.py --gt instances_val2017.json --dt coco_instances_results.json --out analysis/
    python tools/analyze_results.py RUN_DIR --tasks bbox               # boxes only
    python tools/analyze_results.py RUN_DIR --gallery 8                # + the 8 images that lose the most
    python tools/analyze_results.py --gt GT.json --dt RES.json --out DIR --gallery 8 --image-root IMAGES/

For boxes (``bbox``) and masks (``segm``, when the results carry them): AP50 as TIDE computes it,
and the AP50 points lost to classification (cls), localization (loc), both, duplicate (dupe),
background (bkg) and missed-object (miss) errors, plus the false-positive / false-negative totals
(FP, FN); foreground IoU 0.5, background IoU 0.1. See docs/evaluation.md.

A run directory gives its ``inference/coco_instances_results.json`` and the ground truth the
evaluator scored it against (``inference/coco_ground_truth.json``; for older runs, the test set
rebuilt from ``config.yaml``), and its images through the run's test set. Output (``--out``,
default ``RUN_DIR/inference``): ``errors.json``, ``errors.md`` (the table, also printed),
``errors.png`` (a bar chart), ``pr_curves_<task>.png`` (COCOeval's precision-recall curves per
area range) and, with ``--gallery N``, ``failures/NN_image<id>.png`` (ground truth | predictions,
each marked with its error type).
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--gallery", type=int, default=0, metavar="N",
                        help="also draw the N images that lose the most (missed objects + false positives scoring "
                             ">= --gallery-score-thresh) into OUT/failures/")
    parser.add_argument("--gallery-score-thresh", type=float, default=0.5,
                        help="detections below this score are not drawn in, nor counted by, the gallery (default 0.5)")
    parser.add_argument("--image-root", help="with --gt: the folder the ground truth's image file_name entries are "
                                             "relative to (for --gallery)")
    add_traceback_flag(parser)
    args = parser.parse_args(argv)
    if args.run_dir and (args.gt or args.dt):
        parser.error("give either RUN_DIR or --gt and --dt, not both")
    if not args.run_dir and not (args.gt and args.dt and args.out):
        parser.error("give RUN_DIR, or --gt GT.json --dt RESULTS.json --out DIR")
    if args.gallery < 0:
        parser.error(f"--gallery must be >= 0, got {args.gallery}")
    if args.gallery and args.gt and not args.image_root:
        parser.error("--gallery with --gt needs --image-root (where the ground truth's images are)")
    if args.image_root and args.run_dir:
        parser.error("--image-root is for --gt; a run directory's images come from its test set")
    return args


def run(args: argparse.Namespace) -> int:
    from framework.evaluation.coco_metrics import load_coco_gt, run_cocoeval
    from framework.evaluation.error_ap import error_breakdown
    from framework.evaluation.error_analysis import error_assignments
    from framework.evaluation.error_report import errors_markdown, write_error_report
    from framework.evaluation.pr_curves import pr_curves_from_cocoeval, write_pr_curve_charts

    if args.run_dir:
        from framework.engine.evaluation_files import INFERENCE_DIR, last_evaluation_files

        files = last_evaluation_files(args.run_dir)
        gt, results, gt_source = files.ground_truth, files.results, files.ground_truth_source
        out = Path(args.out) if args.out else Path(args.run_dir) / INFERENCE_DIR
    else:
        gt, results, gt_source, out = args.gt, Path(args.dt), f"'{args.gt}'", Path(args.out)
    start = time.perf_counter()
    # From the files: the inputs are checked with messages naming them.
    assignments = error_assignments(gt=gt, results=results, tasks=args.tasks)
    breakdown = {task: error_breakdown(a) for task, a in assignments.items()}
    logger.info(f"Analyzed {', '.join(breakdown)} in {time.perf_counter() - start:.2f} s (reading the files included)")
    sources = f"Ground truth: {gt_source}; results: '{results}'."
    written = list(write_error_report(breakdown, out, sources=sources).values())

    # COCOeval's curves: the checked files read again (a second read costs less than keeping two copies apart).
    coco_gt = load_coco_gt(gt)
    with open(results) as f:
        result_list = json.load(f)
    written += write_pr_curve_charts([pr_curves_from_cocoeval(run_cocoeval(coco_gt, result_list, task))
                                      for task in assignments], out)
    if args.gallery:
        written += _gallery(args, coco_gt=coco_gt, results=result_list, assignments=assignments, out=out)
    print(errors_markdown(breakdown, sources=sources))
    print(f"Wrote {', '.join(str(p.relative_to(out)) for p in written)} to {out}")
    return 0


def _gallery(args: argparse.Namespace, *, coco_gt, results, assignments, out: Path) -> list[Path]:
    """The gallery of failures of the mask analysis (else the box one) into ``out/failures/``."""
    from framework.data.detection_utils import read_image
    from framework.data.skipping import BAD_IMAGE_ERRORS
    from framework.evaluation.error_gallery import GALLERY_DIR, failure_gallery, write_gallery

    if args.run_dir:
        from framework.engine.evaluation_files import test_image_files

        files = test_image_files(args.run_dir)
    else:
        files = {img["id"]: str(Path(args.image_root) / img["file_name"]) for img in coco_gt.dataset["images"]}

    def load(image_id: int):
        if image_id not in files:
            from framework.data.detection_utils import ImageReadError

            raise ImageReadError(f"image {image_id} is not in the run's test set any more")
        return read_image(files[image_id], "RGB"), files[image_id]

    task = "segm" if "segm" in assignments else next(iter(assignments))
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    pictures = failure_gallery(coco_gt=coco_gt, results=results, assignment=assignments[task], load_image=load,
                               num_images=args.gallery, category_names=names, score_thresh=args.gallery_score_thresh,
                               skip_errors=BAD_IMAGE_ERRORS)
    return write_gallery(pictures, out / GALLERY_DIR)


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
