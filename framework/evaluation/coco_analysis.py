"""What :class:`~framework.evaluation.coco_evaluation.COCOEvaluator` adds to an evaluation with
``analysis=True`` (its default), from what it already holds (the ground truth, the result dicts and
each task's evaluated COCOeval), reading no file:

* **metrics**: per task the TIDE error breakdown (:mod:`~framework.evaluation.error_analysis`) as
  ``dAP-cls``, ``dAP-loc``, ``dAP-both``, ``dAP-dupe``, ``dAP-bkg``, ``dAP-miss``, ``dAP-FP``,
  ``dAP-FN`` (AP50 points), beside the AP entries: ``bbox/dAP-cls`` in ``metrics.json``, and a
  TensorBoard scalar at every evaluation of a training;
* **files** in the evaluator's output folder (a run's ``inference/``), rewritten at every
  evaluation: ``errors.json`` / ``errors.md`` / ``errors.png`` (:mod:`~framework.evaluation.error_report`)
  and ``pr_curves_<task>.png`` (:func:`~framework.evaluation.pr_curves.pr_curves_chart`);
* **TensorBoard**, when the evaluation runs inside a training (an event storage is current): a PR
  curve per task and category (``pr_bbox/<class>``, at IoU 0.5, over score thresholds;
  :func:`~framework.evaluation.pr_curves.score_threshold_counts`);
* with ``gallery_size > 0``: the gallery of failures (:mod:`~framework.evaluation.error_gallery`)
  as ``failures/NN_image<id>.png`` and TensorBoard images ``failures/NN``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from framework.evaluation.error_analysis import SPECIAL_ERROR_TYPES, error_assignments
from framework.evaluation.error_ap import error_breakdown
from framework.evaluation.error_gallery import GALLERY_DIR, failure_gallery, write_gallery
from framework.evaluation.error_matching import ERROR_TYPES
from framework.evaluation.error_report import write_error_report
from framework.evaluation.pr_curves import pr_curves_from_cocoeval, score_threshold_counts, write_pr_curve_charts
from framework.utils.events import current_event_storage

__all__ = ["ERROR_METRICS", "error_metrics", "analyze_evaluation"]

logger = logging.getLogger(__name__)

#: The per-task metric names the analysis adds (``bbox/dAP-cls``...).
ERROR_METRICS = tuple(f"dAP-{t}" for t in (*ERROR_TYPES, *SPECIAL_ERROR_TYPES))


def error_metrics(breakdown: Mapping[str, Any]) -> dict[str, float]:
    """One task's breakdown (``analyze_errors(...)[task]``) as ``{"dAP-cls": ..., "dAP-FN": ...}``."""
    values = {**breakdown["dAP"], **breakdown["dAP_special"]}
    return {f"dAP-{t}": float(values[t]) for t in (*ERROR_TYPES, *SPECIAL_ERROR_TYPES)}


def analyze_evaluation(
    *,
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    coco_evals: Mapping[str, Any],
    image_ids: Optional[Sequence[int]],
    category_names: Mapping[int, str],
    output_dir: Optional[Path],
    max_dets: int = 100,
    gallery_size: int = 0,
    gallery_score_thresh: float = 0.5,
    load_image: Optional[Callable[[int], tuple[torch.Tensor, str]]] = None,
    skip_errors: tuple[type[BaseException], ...] = (),
) -> dict[str, dict[str, float]]:
    """Everything of the module docstring for one evaluation; returns ``{task: {"dAP-cls": ...}}``.

    Args:
        coco_gt: the evaluator's ground truth (a loaded ``COCO``).
        results: the evaluation's COCO result dicts.
        coco_evals: task -> its evaluated and accumulated COCOeval (:func:`~framework.evaluation.coco_metrics.run_cocoeval`).
        image_ids: the evaluated images (``None``: all of ``coco_gt``).
        category_names: dataset category id -> name.
        output_dir: where the files go (``None``: none are written).
        max_dets: detections per image the error analysis keeps (TIDE: over all classes).
        gallery_size: images in the gallery of failures (0: none); it needs ``load_image``
            (image id -> ``((3, H, W) uint8 RGB, file name)``), whose ``skip_errors`` leave an
            unreadable image out.
        gallery_score_thresh: detections below this score are neither drawn nor counted as the
            gallery's false positives.
    """
    tasks = list(coco_evals)
    if not results:
        logger.info("Error analysis: no detections to analyze; its metrics are NaN")
        return {task: dict.fromkeys(ERROR_METRICS, float("nan")) for task in tasks}
    start = time.perf_counter()
    assignments = error_assignments(gt=coco_gt, results=results, tasks=tasks, image_ids=image_ids, max_dets=max_dets)
    breakdown = {task: error_breakdown(a) for task, a in assignments.items()}
    curves = [pr_curves_from_cocoeval(coco_evals[task], category_names=category_names) for task in tasks]
    written = []
    if output_dir is not None:
        written += list(write_error_report(breakdown, output_dir, sources="The evaluator's last evaluation.").values())
        written += write_pr_curve_charts(curves, output_dir)
    storage = current_event_storage()
    if storage is not None:
        for task, assignment in assignments.items():
            for category in sorted(category_names):
                storage.put_pr_curve(f"pr_{task}/{category_names[category]}",
                                     **score_threshold_counts(assignment, category=category))
    if gallery_size > 0 and load_image is not None:
        task = "segm" if "segm" in assignments else tasks[0]
        pictures = failure_gallery(coco_gt=coco_gt, results=results, assignment=assignments[task],
                                   load_image=load_image, num_images=gallery_size, category_names=category_names,
                                   score_thresh=gallery_score_thresh, skip_errors=skip_errors)
        if output_dir is not None:
            written += write_gallery(pictures, output_dir / GALLERY_DIR)
        if storage is not None:
            for rank, (_, picture) in enumerate(pictures, start=1):
                storage.put_image(f"failures/{rank:02d}", picture)
    logger.info(f"Error analysis, PR curves{' and gallery' if gallery_size > 0 else ''}: "
                f"{time.perf_counter() - start:.2f} s" + (f"; wrote {', '.join(p.name for p in written)} to {output_dir}"
                                                           if written else ""))
    return {task: error_metrics(b) for task, b in breakdown.items()}
