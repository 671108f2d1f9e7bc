"""AP lost to each error type, by TIDE's oracle fixes (Bolya et al., ECCV 2020): the AP after fixing
every error of one type, minus the AP as it is.

The AP is TIDE's (github.com/dbolya/tide, ``ap.py``), computed here with numpy for all categories
at once: per category, detections sorted by descending score give precision / recall points;
precision is made non-increasing from the right; the AP is the mean of that precision at the 101
recall thresholds 0, 0.01, ..., 1 (at each, the precision of the first point whose recall reaches
it; 0 past the last point), in percent. A category with detections but no objects has AP 0; the
mean runs over the categories with objects or detections. At IoU 0.5 this is close to, but not
the same as, COCOeval's AP50: TIDE caps detections per image over all classes, and keeps
categories that have detections but no objects (AP 0).

Fixes (what TIDE's ``fix_errors`` does to the AP's list of detections):

* ``cls`` / ``loc``: the detection that a fix recovers an object with becomes a true positive
  (a ``cls`` one under the object's class); every other detection of that type is removed.
* ``both`` / ``dupe`` / ``bkg``: the detections are removed.
* ``miss``: the missed objects are removed from the ground truth.
* special ``FP``: every true positive scores 1 and every false positive 0 (perfect precision,
  same recall); special ``FN``: the ground truth is cut to the objects found (perfect recall,
  same precision).

A main type's dAP is clipped at 0, as TIDE does (a fix can lose a hair of AP to score ties); the
special ones are not. As in TIDE, a fixed list holds the wrong detections before the correct ones
(it re-adds them in that order), which only matters between detections of equal score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from framework.evaluation.error_matching import CORRECT, ERROR_TYPES, ErrorAssignment

__all__ = ["RECALL_THRESHOLDS", "tide_mean_ap", "error_breakdown"]

#: The 101 recall thresholds, each k / 100 exactly as TIDE builds them (not linspace's rounding).
RECALL_THRESHOLDS = np.arange(101) / 100


def tide_mean_ap(*, categories: np.ndarray, scores: np.ndarray, correct: np.ndarray, tiebreak: np.ndarray,
                 num_gt: Mapping[int, int]) -> float:
    """TIDE's mean AP (percent) over categories of a list of detections (see the module docstring).

    Args:
        categories: (N,) int category of each detection.
        scores: (N,) float; within a category, higher scores come first.
        correct: (N,) bool, true positive.
        tiebreak: (N,) int, the order among equal scores (lower first).
        num_gt: category -> number of objects (the recall's denominator).

    Returns:
        The mean over categories with objects or detections; NaN when there are none.
    """
    cats = np.union1d(np.unique(categories), np.array([c for c, n in num_gt.items() if n > 0], dtype=np.int64))
    if cats.size == 0:
        return math.nan
    gt = np.array([num_gt.get(int(c), 0) for c in cats], dtype=np.int64)
    cat = np.searchsorted(cats, categories)
    order = np.lexsort((tiebreak, -scores, cat))
    cat, correct = cat[order], correct[order].astype(np.int64)
    per_cat = np.bincount(cat, minlength=cats.size)
    start = np.concatenate([[0], np.cumsum(per_cat)[:-1]])
    true_cum = np.cumsum(correct)
    true_before = np.concatenate([[0], true_cum])[start]  # true positives in the categories before
    n_true = true_cum - true_before[cat]
    precision = n_true / (np.arange(cat.size) - start[cat] + 1)
    # Point j is read at the thresholds r <= recall_j: the interpolated precision at threshold t is
    # the highest precision among points whose recall reaches it (running max from the right).
    has_gt = gt[cat] > 0
    recall = n_true[has_gt] / gt[cat][has_gt]
    reach = np.searchsorted(RECALL_THRESHOLDS, recall, side="right")  # number of thresholds <= recall
    table = np.zeros((cats.size, RECALL_THRESHOLDS.size + 1))
    np.maximum.at(table, (cat[has_gt], reach), precision[has_gt])
    from_right = np.maximum.accumulate(table[:, ::-1], axis=1)[:, ::-1]
    interpolated = from_right[:, 1:]  # at threshold t: points with reach > t
    ap = np.where(gt > 0, interpolated.sum(axis=1) / RECALL_THRESHOLDS.size * 100, 0.0)
    return float(ap.mean())


def _counts(categories: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(categories, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def error_breakdown(assignment: ErrorAssignment) -> dict:
    """AP50 and the AP lost to each error type of one task.

    Returns:
        ``{"AP50": float, "dAP": {"cls", "loc", "both", "dupe", "bkg", "miss": float},
        "dAP_special": {"FP", "FN": float}, "counts": {error type: int}}``, AP points 0-100
        (NaN where no category is left to average over).
    """
    a = assignment
    n = a.det_score.size
    seq = np.arange(n)
    correct = a.det_error == CORRECT
    listed = ~a.det_ignored
    num_gt = _counts(a.gt_category)
    ap50 = tide_mean_ap(categories=a.det_category[listed], scores=a.det_score[listed], correct=correct[listed],
                        tiebreak=seq[listed], num_gt=num_gt)
    # A fixed list: wrong detections first, then the correct ones, each group in the original order.
    fixed_order = seq + n * correct

    def fixed_ap(code: int) -> float:
        fixed = (a.det_error == code) & (a.det_fix_category >= 0)  # may be an ignored one
        keep = (listed & (a.det_error != code)) | fixed
        categories = np.where(fixed, a.det_fix_category, a.det_category)
        return tide_mean_ap(categories=categories[keep], scores=a.det_score[keep], correct=(correct | fixed)[keep],
                            tiebreak=fixed_order[keep], num_gt=num_gt)

    def listed_ap(scores: np.ndarray, gt: Mapping[int, int]) -> float:
        return tide_mean_ap(categories=a.det_category[listed], scores=scores[listed], correct=correct[listed],
                            tiebreak=fixed_order[listed], num_gt=gt)

    fixed = {name: fixed_ap(code) for code, name in enumerate(ERROR_TYPES[:-1])}
    found = _counts(a.gt_category[~a.gt_missed])
    fixed["miss"] = listed_ap(a.det_score, found)
    special = {
        "FP": listed_ap(np.where(correct, 1.0, 0.0), num_gt) - ap50,
        "FN": listed_ap(a.det_score, _counts(a.gt_category[a.gt_matched])) - ap50,
    }
    return {
        "AP50": ap50,
        "dAP": {name: (max(value - ap50, 0.0) if not math.isnan(value - ap50) else math.nan)
                for name, value in fixed.items()},
        "dAP_special": special,
        "counts": a.error_counts(),
    }
