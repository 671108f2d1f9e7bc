"""Precision-recall curves of an evaluation, in the two forms they are shown in:

* **COCOeval's** (:func:`pr_curves_from_cocoeval`): the interpolated precision at the 101 recall
  points 0, 0.01, ..., 1 that the AP averages, per IoU threshold, category and area range (COCOeval's
  ``eval["precision"]`` at the last ``maxDets``). The area under a category's curve at IoU 0.5 is
  its AP50. Drawn per area range by :func:`pr_curves_chart` (``pr_curves_<task>.png``).
* **At score thresholds** (:func:`score_threshold_counts`): true / false positives and false
  negatives of one category when detections scoring below ``t`` are dropped, for ``t`` = 0, 1/100,
  ..., 1, from the error analysis' matching at IoU 0.5 (TIDE's, :mod:`~framework.evaluation.error_matching`).
  That is what TensorBoard's PR-curve dashboard takes (its threshold axis is the score), with
  counts COCOeval does not keep. Its curve is not interpolated, and TIDE caps detections per image
  over all classes (COCOeval per class), so it can differ slightly from COCOeval's at IoU 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from framework.evaluation.error_matching import CORRECT, ErrorAssignment

__all__ = ["PRCurves", "pr_curves_from_cocoeval", "pr_curves_chart", "pr_chart_name", "write_pr_curve_charts",
           "score_threshold_counts", "NUM_SCORE_THRESHOLDS"]

#: Score thresholds of :func:`score_threshold_counts`: 0, 0.01, ..., 1 (TensorBoard allows at most 127).
NUM_SCORE_THRESHOLDS = 101


@dataclass(frozen=True)
class PRCurves:
    """COCOeval's interpolated precision-recall curves of one task.

    Attributes:
        task: "bbox" or "segm".
        recall: (R,) the recall points (101: 0, 0.01, ..., 1).
        precision: (T, R, K, A) float64 precision at each IoU threshold, recall point, category and
            area range, at the largest ``maxDets``; -1 where undefined (no ground truth of that
            category in that area range), 0 past the highest recall reached.
        iou_thresholds: (T,) 0.5, 0.55, ..., 0.95.
        category_ids: (K,) dataset category ids; category_names: (K,) their names.
        area_labels: (A,) "all", "small", "medium", "large".
    """

    task: str
    recall: np.ndarray
    precision: np.ndarray
    iou_thresholds: np.ndarray
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    area_labels: tuple[str, ...]

    def iou_index(self, iou: float) -> int:
        """Index of IoU threshold ``iou`` (e.g. 0.5) in :attr:`iou_thresholds`."""
        found = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if not found.size:
            raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {self.iou_thresholds.tolist()}")
        return int(found[0])

    def ap(self, *, iou: float | None, area: str = "all") -> np.ndarray:
        """(K,) AP in percent per category at IoU ``iou`` (``None``: mean over 0.50:0.95) in ``area``;
        NaN where undefined. Equal to the evaluator's ``AP50`` / ``AP-<name>`` entries."""
        a = self.area_labels.index(area)
        p = self.precision[:, :, :, a] if iou is None else self.precision[self.iou_index(iou)][None, :, :, a]
        out = np.full(p.shape[2], np.nan)
        for k in range(p.shape[2]):
            valid = p[:, :, k][p[:, :, k] > -1]
            if valid.size:
                out[k] = valid.mean() * 100
        return out


def pr_curves_from_cocoeval(coco_eval: Any, *, category_names: Mapping[int, str] | None = None) -> PRCurves:
    """The curves of an evaluated and accumulated COCOeval (pycocotools' or faster-coco-eval's; see
    :func:`framework.evaluation.coco_metrics.run_cocoeval`).

    Args:
        category_names: dataset category id -> name (default: the ground truth's names).
    """
    params = coco_eval.params
    names = {c["id"]: c["name"] for c in coco_eval.cocoGt.dataset["categories"]}
    names.update(category_names or {})
    return PRCurves(
        task=str(params.iouType),
        recall=np.asarray(params.recThrs, dtype=np.float64),
        precision=np.asarray(coco_eval.eval["precision"], dtype=np.float64)[..., -1],
        iou_thresholds=np.asarray(params.iouThrs, dtype=np.float64),
        category_ids=tuple(int(c) for c in params.catIds),
        category_names=tuple(names.get(int(c), str(c)) for c in params.catIds),
        area_labels=tuple(params.areaRngLbl),
    )


def _mean_curve(precision: np.ndarray) -> np.ndarray:
    """(R,) mean over the categories (last axis) with a defined curve; NaN if none."""
    defined = (precision > -1).all(axis=0)
    if not defined.any():
        return np.full(precision.shape[0], np.nan)
    return precision[:, defined].mean(axis=1)


def pr_curves_chart(curves: PRCurves, *, iou: float = 0.5, max_legend: int = 24) -> Any:
    """A PIL image: one panel per area range with every category's curve at IoU ``iou`` (thin,
    one colour each), their mean (thick black; its area is the AP50 of the panel title) and the mean
    over IoU 0.50:0.95 (thick grey; its area is the AP). Categories without ground truth in an
    area range have no curve there. The legend names each category with its AP at ``iou`` (area
    all) when there are at most ``max_legend``."""
    from framework.utils.charts import line_panels, palette

    t = curves.iou_index(iou)
    colors = palette(len(curves.category_ids))
    panels = []
    for a, area in enumerate(curves.area_labels):
        lines = []
        for k, color in enumerate(colors):
            curve = curves.precision[t, :, k, a]
            if (curve > -1).all():
                lines.append((curves.recall, curve, color, 1))
        at_iou = _mean_curve(curves.precision[t, :, :, a])
        over_ious = np.nanmean(np.stack([_mean_curve(curves.precision[j, :, :, a])
                                         for j in range(len(curves.iou_thresholds))]), axis=0) \
            if not np.isnan(at_iou).all() else at_iou
        lines += [(curves.recall, over_ious, (150, 150, 150), 3), (curves.recall, at_iou, (0, 0, 0), 3)]
        ap_iou, ap = _mean_or_nan(curves.ap(iou=iou, area=area)), _mean_or_nan(curves.ap(iou=None, area=area))
        panels.append((f"{area}: AP{round(iou * 100)} {_number(ap_iou)}, AP {_number(ap)}", lines))
    per_class = curves.ap(iou=iou, area="all")
    legend = [(f"mean, IoU {iou:g}", (0, 0, 0)), ("mean, IoU .50:.95", (150, 150, 150))]
    if len(colors) <= max_legend:
        legend += [(f"{name} {_number(v)}", color) for name, v, color in zip(curves.category_names, per_class, colors)]
    else:
        legend += [(f"{len(colors)} categories (thin)", (90, 90, 200))]
    title = f"{curves.task}: precision-recall at IoU {iou:g} per area range (COCOeval, interpolated, 101 recall points)"
    return line_panels(panels, title=title, legend=legend, x_label="recall", y_label="precision")


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _number(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.1f}"


def pr_chart_name(task: str) -> str:
    """File name of a task's chart: ``pr_curves_<task>.png``."""
    return f"pr_curves_{task}.png"


def write_pr_curve_charts(curves: Sequence[PRCurves], out_dir: Union[str, Path], *, iou: float = 0.5) -> list[Path]:
    """Write :func:`pr_curves_chart` of each task as ``out_dir/pr_curves_<task>.png``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in curves:
        path = out / pr_chart_name(c.task)
        pr_curves_chart(c, iou=iou).save(path)
        paths.append(path)
    return paths


def score_threshold_counts(assignment: ErrorAssignment, *, category: int,
                           num_thresholds: int = NUM_SCORE_THRESHOLDS) -> dict[str, np.ndarray]:
    """Counts of one category at the score thresholds ``t_i = i / (num_thresholds - 1)``, in the
    form of TensorBoard's raw PR curve (``SummaryWriter.add_pr_curve_raw``).

    At ``t_i`` the detections of ``category`` scoring >= ``t_i`` are kept (those on a crowd region,
    ``det_ignored``, are left out, as the AP leaves them out): ``tp`` = the correct ones (matched at
    IoU >= 0.5, :mod:`~framework.evaluation.error_matching`), ``fp`` = the others, ``fn`` = the
    category's objects minus ``tp``, ``tn`` = 0 (no true negatives in detection);
    ``precision = tp / (tp + fp)`` (0 where nothing is kept, as TensorBoard's own ``pr_curve`` has it) and
    ``recall = tp / objects`` (0 without objects).

    Returns:
        ``{"tp", "fp", "tn", "fn", "precision", "recall"}``, each (num_thresholds,) float64.
    """
    if not 2 <= num_thresholds <= 127:
        raise ValueError(f"num_thresholds must be in [2, 127] (TensorBoard's limit), got {num_thresholds}")
    thresholds = np.arange(num_thresholds) / (num_thresholds - 1)
    keep = (assignment.det_category == category) & ~assignment.det_ignored
    scores = assignment.det_score[keep]
    correct = assignment.det_error[keep] == CORRECT
    num_gt = int((assignment.gt_category == category).sum())
    # kept[i, j]: detection j scores >= threshold i
    kept = scores[None, :] >= thresholds[:, None]
    tp = (kept & correct[None, :]).sum(axis=1).astype(np.float64)
    fp = (kept & ~correct[None, :]).sum(axis=1).astype(np.float64)
    fn = num_gt - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / num_gt if num_gt else np.zeros(num_thresholds)
    return {"tp": tp, "fp": fp, "tn": np.zeros(num_thresholds), "fn": fn, "precision": precision, "recall": recall}
