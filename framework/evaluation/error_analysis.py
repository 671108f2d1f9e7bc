"""Where the AP goes: the error breakdown of TIDE (Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020) for boxes and masks.

    from framework.evaluation.error_analysis import analyze_errors
    breakdown = analyze_errors(gt="instances_val2017.json", results="inference/coco_instances_results.json")
    breakdown["segm"]["dAP"]["loc"]   # mask AP50 points gained if every localization error were fixed

Every wrong detection is a classification (``cls``), localization (``loc``), both (``both``),
duplicate (``dupe``) or background (``bkg``) error, and every object nobody found a missed one
(``miss``), at foreground IoU 0.5 and background IoU 0.1 (:mod:`~framework.evaluation.error_matching`).
Each type's dAP is TIDE's AP50 after fixing all errors of that type minus the AP50 as it is; the
special ``FP`` / ``FN`` dAPs fix all false positives / all false negatives
(:mod:`~framework.evaluation.error_ap`). The numbers equal those of the ``tidecv`` package on the
same inputs (tests/evaluation/test_error_analysis_tidecv.py). Matching is per image and the 18 APs
per task are computed for all categories at once with numpy, so that an evaluator can afford it at
every evaluation: pass it the ``COCO`` it already holds and its result list (no file is read).

Inputs are COCO json / result dicts as :class:`~framework.evaluation.coco_evaluation.COCOEvaluator`
writes them; inputs that do not fit raise :class:`~framework.errors.EvaluationInputError`.
Files (errors.json, a table, a chart): :mod:`~framework.evaluation.error_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from framework.errors import EvaluationInputError
from framework.evaluation.error_ap import error_breakdown
from framework.evaluation.error_inputs import (
    GroundTruthSource,
    ResultsSource,
    check_ground_truth_for,
    check_results,
    read_ground_truth,
    read_results,
    resolve_tasks,
)
from framework.evaluation.error_matching import ERROR_TYPES, ErrorAssignment, assign_errors

__all__ = ["ERROR_TYPES", "SPECIAL_ERROR_TYPES", "analyze_errors", "error_assignments"]

#: The special error types: all false positives, all false negatives.
SPECIAL_ERROR_TYPES = ("FP", "FN")


def error_assignments(
    *,
    gt: GroundTruthSource,
    results: ResultsSource,
    tasks: Optional[Sequence[str]] = None,
    image_ids: Optional[Sequence[int]] = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.1,
    max_dets: int = 100,
) -> dict[str, ErrorAssignment]:
    """The inputs checked, then per task which detections are correct and the error type of every
    other one and of every missed object (:func:`~framework.evaluation.error_matching.assign_errors`):
    what :func:`analyze_errors` turns into AP lost, and what PR curves and a gallery of failures read.

    Args and Raises: as :func:`analyze_errors`.

    Returns:
        ``{task: ErrorAssignment}``.
    """
    coco_gt, gt_name = read_ground_truth(gt)
    result_list, results_name = read_results(results)
    tasks = resolve_tasks(tasks, result_list)
    check_results(coco_gt, result_list, tasks=tasks, gt_name=gt_name, results_name=results_name)
    analyzed = list(coco_gt.getImgIds()) if image_ids is None else [int(i) for i in image_ids]
    unknown = sorted(set(analyzed) - set(coco_gt.getImgIds()))
    if unknown:
        raise EvaluationInputError(f"image_ids {unknown[:10]} are not images of {gt_name}")
    assignments = {}
    for task in tasks:
        check_ground_truth_for(coco_gt, task, image_ids=analyzed, gt_name=gt_name)
        assignments[task] = assign_errors(coco_gt, result_list, task=task, image_ids=image_ids, fg_iou=fg_iou,
                                          bg_iou=bg_iou, max_dets=max_dets)
    return assignments


def analyze_errors(
    *,
    gt: GroundTruthSource,
    results: ResultsSource,
    tasks: Optional[Sequence[str]] = None,
    image_ids: Optional[Sequence[int]] = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.1,
    max_dets: int = 100,
) -> dict[str, dict[str, Any]]:
    """The TIDE error breakdown of ``results`` against ``gt``, per task.

    Args:
        gt: COCO instances json path, the json as a dict, or a loaded ``COCO`` (used as is; crowd
            annotations are ignore regions).
        results: COCO results json path (e.g. ``coco_instances_results.json``) or the list of dicts
            ``{image_id, category_id, score, bbox: [x, y, w, h][, segmentation: RLE]}``.
        tasks: "bbox" (box IoU) and/or "segm" (mask IoU); ``None``: "bbox", plus "segm" when the
            results carry a ``segmentation``.
        image_ids: analyze only these images of ``gt`` (as COCOeval's ``imgIds``; ``None``: all).
        fg_iou, bg_iou: foreground / background IoU thresholds (TIDE's defaults).
        max_dets: detections per image kept, highest scores first, over all classes (TIDE's cap).

    Returns:
        ``{task: {"AP50": float, "dAP": {"cls", "loc", "both", "dupe", "bkg", "miss": float},
        "dAP_special": {"FP", "FN": float}, "counts": {error type: int}}}`` in AP points (0-100);
        NaN where no category is left to average over.

    Raises:
        EvaluationInputError: naming the file and what is wrong (see :mod:`~framework.evaluation.error_inputs`).
    """
    assignments = error_assignments(gt=gt, results=results, tasks=tasks, image_ids=image_ids, fg_iou=fg_iou,
                                    bg_iou=bg_iou, max_dets=max_dets)
    return {task: error_breakdown(assignment) for task, assignment in assignments.items()}
