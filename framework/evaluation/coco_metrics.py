"""COCO box / mask AP from COCO result dicts: pycocotools' (or faster-coco-eval's) COCOeval run the
way detectron2 runs it, as plain functions on a ground truth and a list of results.

The protocol: ``COCOeval`` runs once per task over the images of the ground truth (or a subset);
for ``segm`` the result boxes are dropped so that the small/medium/large split uses mask areas;
``maxDets`` is ``[1, 10, max_dets_per_image]``. Metrics are percentages, and NaN where COCOeval
reports -1 (no ground truth in that area range / category). :class:`COCOEvaluator
<framework.evaluation.coco_evaluation.COCOEvaluator>` feeds a model's predictions through these.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from framework.errors import ConfigError, did_you_mean
from framework.evaluation.coco_backend import BACKENDS, Backend, coco_api

__all__ = ["Task", "TASKS", "AP_METRICS", "load_coco_gt", "run_cocoeval", "cocoeval_metrics", "evaluate_coco_results",
           "evaluate_predictions_json"]

logger = logging.getLogger(__name__)

Task = Literal["bbox", "segm"]
TASKS: tuple[str, ...] = ("bbox", "segm")
#: Metric names in the order of ``COCOeval.stats[:6]``.
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def load_coco_gt(gt_json: Union[str, Path, Mapping[str, Any]], *, backend: Backend = "pycocotools") -> COCO:
    """Load a COCO ground truth quietly, adding the optional top-level keys some exports lack.

    Args:
        gt_json: a COCO instances json file, or such a json already read (a dict, e.g. the
            validated ground truth of :func:`framework.data.coco.coco_ground_truth`).
        backend: whose ``COCO`` class holds it (:mod:`framework.evaluation.coco_backend`);
            :func:`evaluate_coco_results` evaluates with the same backend.

    Raises:
        FileNotFoundError: naming the path, if it does not exist.
    """
    coco_class, _ = coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        if isinstance(gt_json, Mapping):
            path = "<ground truth given as a dict>"
            coco = coco_class()
            coco.dataset = dict(gt_json)  # COCO only reads it
            coco.createIndex()
        else:
            path = Path(gt_json)
            if not path.is_file():
                raise FileNotFoundError(f"COCO ground-truth json not found: '{path}'")
            coco = coco_class(str(path))
    missing = [k for k in ("images", "annotations", "categories") if k not in coco.dataset]
    if missing:
        raise ValueError(f"'{path}' is not a COCO instances json: it has no {missing} key(s)")
    # Some exports omit them; older pycocotools' loadRes reads dataset['info'] unconditionally.
    coco.dataset.setdefault("info", {})
    coco.dataset.setdefault("licenses", [])
    return coco


def _cocoeval_class(coco_gt: Any) -> Any:
    """The COCOeval of the backend ``coco_gt`` was loaded with."""
    for backend in BACKENDS:
        try:
            coco_class, cocoeval_class = coco_api(backend)
        except ConfigError:  # faster-coco-eval not installed: then coco_gt is not one of its
            continue
        if type(coco_gt) is coco_class:
            return cocoeval_class
    return COCOeval  # a subclass or look-alike of pycocotools' COCO


def _empty_results(coco_gt: COCO) -> COCO:
    """A result COCO with no detections (``loadRes`` rejects an empty list)."""
    coco_dt = type(coco_gt)()
    coco_dt.dataset = {
        "info": {},
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _max_dets_list(max_dets_per_image: int) -> list[int]:
    """COCOeval's ``maxDets``: ``[1, 10, m]``, without entries above ``m``.

    COCOeval sorts the list and keeps ``maxDets[-1]`` detections, so a plain ``[1, 10, m]`` with m < 10
    would silently keep 10 (a quirk detectron2 shares).
    """
    m = int(max_dets_per_image)
    return sorted({d for d in (1, 10) if d < m} | {m})


def _mean_valid(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCOeval's marker for 'undefined'), as a percentage; NaN if none."""
    valid = values[values > -1]
    return float(np.mean(valid) * 100) if valid.size else float("nan")


def _summarize_ap(coco_eval: COCOeval) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl (percent) from ``coco_eval.eval['precision']``.

    Same computation as ``COCOeval.summarize`` but always at the last (largest) ``maxDets``, which
    ``summarize`` does only for AP50..APl (its AP is hard-wired to maxDets=100).
    """
    params = coco_eval.params
    precision = coco_eval.eval["precision"]  # (T iou thresholds, R recall points, K classes, A areas, M maxDets)

    def area(name: str) -> int:
        return params.areaRngLbl.index(name)

    def iou(threshold: float) -> int:
        return int(np.flatnonzero(np.isclose(params.iouThrs, threshold))[0])

    return {
        "AP": _mean_valid(precision[:, :, :, area("all"), -1]),
        "AP50": _mean_valid(precision[iou(0.5), :, :, area("all"), -1]),
        "AP75": _mean_valid(precision[iou(0.75), :, :, area("all"), -1]),
        "APs": _mean_valid(precision[:, :, :, area("small"), -1]),
        "APm": _mean_valid(precision[:, :, :, area("medium"), -1]),
        "APl": _mean_valid(precision[:, :, :, area("large"), -1]),
    }


def _per_category_ap(coco_eval: COCOeval, names: Mapping[int, str]) -> dict[str, float]:
    """``{"AP-<name>": AP}`` (percent; NaN for a category without ground truth), area all, last maxDets."""
    precision = coco_eval.eval["precision"]
    all_area = coco_eval.params.areaRngLbl.index("all")
    return {
        f"AP-{names[cat_id]}": _mean_valid(precision[:, :, k, all_area, -1])
        for k, cat_id in enumerate(coco_eval.params.catIds)
    }


def _log_per_category(task: str, per_category: Mapping[str, float], columns: int = 3) -> None:
    pairs = [(name[len("AP-"):], value) for name, value in per_category.items()]
    flat = list(itertools.chain.from_iterable(pairs))
    rows = [flat[i : i + 2 * columns] for i in range(0, len(flat), 2 * columns)]
    table = tabulate(rows, headers=["category", "AP"] * min(columns, len(pairs)), tablefmt="pipe", floatfmt=".3f")
    logger.info("Per-category %s AP:\n%s", task, table)


def run_cocoeval(
    coco_gt: COCO,
    coco_results: Sequence[Mapping[str, Any]],
    task: Task,
    *,
    max_dets_per_image: int = 100,
    image_ids: Optional[Sequence[int]] = None,
) -> COCOeval:
    """COCOeval of one task, evaluated and accumulated (its summary logged): the object whose
    ``eval["precision"]`` (T IoU thresholds x R recall points x K categories x A area ranges x M
    maxDets, -1 where undefined) the metrics and the precision-recall curves are read from.

    Args: as :func:`evaluate_coco_results`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown COCO task {task!r}; valid: {list(TASKS)}.{did_you_mean(task, TASKS)}")
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        if not image_ids:
            raise ValueError("evaluate_coco_results: image_ids is empty (COCOeval would evaluate every image); "
                             "pass None for all images, or at least one image id")
        unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
        if unknown:
            raise ValueError(f"evaluate_coco_results: image_ids {unknown[:10]} are not images of the ground truth")
    # loadRes adds top-level keys (id, area, ...) to the dicts it is given and nothing deeper mutates
    # them, so shallow copies keep the caller's results clean (a deepcopy of 10^5 RLEs takes seconds).
    results = [dict(r) for r in coco_results]
    if task == "segm":
        missing = sum("segmentation" not in r for r in results)
        if missing:
            raise ValueError(f"segm evaluation: {missing} of {len(results)} results have no 'segmentation'")
        # With a bbox present, loadRes would take the box area as the instance area and so split
        # small/medium/large by box size instead of mask size.
        for r in results:
            r.pop("bbox", None)

    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(results)
    else:
        logger.warning("No predictions to evaluate for task %r: every AP is 0 (or NaN without ground truth)", task)
        coco_dt = _empty_results(coco_gt)

    coco_eval = _cocoeval_class(coco_gt)(coco_gt, coco_dt, task)
    coco_eval.params.maxDets = _max_dets_list(max_dets_per_image)
    if image_ids is not None:
        coco_eval.params.imgIds = image_ids
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        coco_eval.evaluate()
        coco_eval.accumulate()
        if max_dets_per_image == 100:
            coco_eval.summarize()  # only its standard log text; the numbers come from _summarize_ap
    text = summary.getvalue()
    if "Average Precision" in text:
        logger.info("COCOeval %s summary:\n%s", task, text[text.index(" Average Precision") :].rstrip())
    return coco_eval


def cocoeval_metrics(coco_eval: COCOeval, *, category_names: Optional[Mapping[int, str]] = None) -> dict[str, float]:
    """The metrics of an evaluated :func:`run_cocoeval` (logged as tables): ``{"AP", "AP50", "AP75",
    "APs", "APm", "APl", "AP-<category name>"...}`` in percent, NaN where undefined.

    Args:
        category_names: dataset category id -> name for the per-category entries (default: the
            names in the ground-truth json).
    """
    task = coco_eval.params.iouType
    metrics = _summarize_ap(coco_eval)
    if any(math.isnan(v) for v in metrics.values()):
        logger.info("Some %s metrics are NaN: no ground truth in that area range", task)
    table = tabulate([list(metrics.values())], headers=list(metrics), tablefmt="pipe", floatfmt=".3f")
    logger.info("Evaluation results for %s:\n%s", task, table)

    gt_names = {cat["id"]: cat["name"] for cat in coco_eval.cocoGt.dataset["categories"]}
    category_names = gt_names if category_names is None else {**gt_names, **category_names}
    per_category = _per_category_ap(coco_eval, category_names)
    _log_per_category(task, per_category)
    metrics.update(per_category)
    return metrics


def evaluate_coco_results(
    coco_gt: COCO,
    coco_results: Sequence[Mapping[str, Any]],
    task: Task,
    *,
    max_dets_per_image: int = 100,
    category_names: Optional[Mapping[int, str]] = None,
    image_ids: Optional[Sequence[int]] = None,
) -> dict[str, float]:
    """Run COCOeval for one task and return AP metrics in percent (NaN where undefined).

    Args:
        coco_gt: the ground truth (see :func:`load_coco_gt`); its backend (pycocotools' or
            faster-coco-eval's ``COCO``) evaluates. COCOeval caches RLEs of its annotations in
            place, which does not change any result.
        coco_results: COCO result dicts (dataset category ids). Not modified.
        task: "bbox" or "segm" (the latter needs a ``segmentation`` in every result).
        max_dets_per_image: detections per image (and category) kept, highest scores first;
            COCOeval's ``maxDets`` becomes ``[1, 10, max_dets_per_image]`` (entries above it dropped).
        category_names: dataset category id -> name for the per-category entries (default: the
            names in the ground-truth json).
        image_ids: evaluate on these images of ``coco_gt`` only (COCOeval's ``params.imgIds``);
            ``None``: all of them. The same metrics as a ground truth without the other images
            (a category left without ground truth gets NaN). Must not be empty: COCOeval reads
            an empty list as "every image".

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<category name>"...}``.
    """
    coco_eval = run_cocoeval(coco_gt, coco_results, task, max_dets_per_image=max_dets_per_image, image_ids=image_ids)
    return cocoeval_metrics(coco_eval, category_names=category_names)


def evaluate_predictions_json(
    gt_json: Union[str, Path], results_json: Union[str, Path], task: Task, *, max_dets_per_image: int = 100,
    backend: Backend = "pycocotools",
) -> dict[str, float]:
    """COCO AP of a result json (e.g. ``coco_instances_results.json``) against a ground-truth json.

    Same protocol as :class:`COCOEvaluator`, without a model: useful to re-score saved predictions.
    Returns the metrics dict of :func:`evaluate_coco_results` (percent, NaN where undefined).
    """
    path = Path(results_json)
    if not path.is_file():
        raise FileNotFoundError(f"COCO results json not found: '{path}'")
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"'{path}' must hold a json list of COCO result dicts, got {type(results).__name__}")
    return evaluate_coco_results(load_coco_gt(gt_json, backend=backend), results, task,
                                 max_dets_per_image=max_dets_per_image)
