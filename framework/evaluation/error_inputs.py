"""Read and check the inputs of the error analysis (:mod:`framework.evaluation.error_analysis`): a
COCO ground truth and COCO-format results, as the COCO evaluator writes them.

Everything that would make the analysis wrong or crash deep inside pycocotools is refused here,
with one :class:`~framework.errors.EvaluationInputError` naming the file and what is wrong:
results on image ids or categories the ground truth does not have, an empty results list, result
or annotation entries without the fields a task needs (``bbox``; ``segmentation`` for ``segm``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from framework.errors import EvaluationInputError, did_you_mean
from framework.evaluation.coco_metrics import TASKS, load_coco_gt

__all__ = ["GroundTruthSource", "ResultsSource", "read_ground_truth", "read_results", "resolve_tasks",
           "check_results", "check_ground_truth_for"]

#: A COCO ground truth: a json path, the json as a dict, or a loaded pycocotools-style ``COCO``.
GroundTruthSource = Union[str, Path, Mapping[str, Any], Any]
#: COCO-format results: a json path (e.g. ``coco_instances_results.json``) or the list of dicts.
ResultsSource = Union[str, Path, Sequence[Mapping[str, Any]]]

_LISTED = 10  # ids / entries shown in a message before "..."


def _shown(values: Sequence[Any]) -> str:
    values = list(values)
    return ", ".join(map(str, values[:_LISTED])) + (", ..." if len(values) > _LISTED else "")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise EvaluationInputError(f"{what} not found: '{path}'")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvaluationInputError(f"'{path}' is not valid json ({e}); expected {what}") from e


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_box(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 4 and all(_is_number(x) for x in v)


def _is_mask(v: Any) -> bool:
    return (isinstance(v, Mapping) and "counts" in v and isinstance(v.get("size"), (list, tuple))
            and len(v["size"]) == 2) or (isinstance(v, list) and len(v) > 0)


def read_ground_truth(gt: GroundTruthSource) -> tuple[Any, str]:
    """``(COCO, name for messages)`` of a ground truth given as a json path, a dict or a ``COCO``.

    A ``COCO`` object (pycocotools' or faster-coco-eval's, e.g. the evaluator's own) is used as it
    is, unchecked. A path or dict must be a COCO instances json whose annotations have an ``id``,
    ``image_id``, ``category_id`` and an XYWH ``bbox`` of 4 finite numbers.
    """
    if hasattr(gt, "dataset") and hasattr(gt, "getImgIds"):
        return gt, "the given ground truth"
    if isinstance(gt, Mapping):
        data, name = gt, "the ground truth given as a dict"
    else:
        path = Path(gt)
        data, name = _read_json(path, "COCO ground-truth json"), f"ground truth '{path}'"
    if not isinstance(data, Mapping) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise EvaluationInputError(f"{name} is not a COCO instances json: it needs 'images', 'annotations' and "
                                   f"'categories' lists (found {keys})")
    bad = [i for i, a in enumerate(data["annotations"])
           if not isinstance(a, Mapping) or not all(k in a for k in ("id", "image_id", "category_id"))
           or not _is_box(a.get("bbox"))]
    if bad:
        raise EvaluationInputError(f"{name}: {len(bad)} annotation(s) lack an 'id', 'image_id', 'category_id' or an "
                                   f"[x, y, w, h] 'bbox' of 4 finite numbers (annotations[{_shown(bad)}])")
    return load_coco_gt(data), name


def read_results(results: ResultsSource) -> tuple[list[dict[str, Any]], str]:
    """``(result dicts, name for messages)`` of COCO-format results given as a json path or a list.

    Each result needs an integer ``image_id`` and ``category_id`` and a finite ``score``; which of
    ``bbox`` / ``segmentation`` it needs depends on the task (:func:`check_results`). An empty list
    is an error: there is nothing to break down.
    """
    if isinstance(results, (str, Path)):
        path = Path(results)
        name = f"results '{path}'"
        data = _read_json(path, "COCO results json")
    else:
        name, data = "the given results", results
    if isinstance(data, Mapping) or not isinstance(data, Sequence) or isinstance(data, str):
        raise EvaluationInputError(f"{name} must be a json list of COCO result dicts {{image_id, category_id, score, "
                                   f"bbox[, segmentation]}}, got a {type(data).__name__}")
    if len(data) == 0:
        raise EvaluationInputError(f"{name} holds no detections (an empty list): there are no errors to analyze; "
                                   "every object is missed")
    bad = [i for i, r in enumerate(data)
           if not isinstance(r, Mapping) or not isinstance(r.get("image_id"), int) or isinstance(r.get("image_id"), bool)
           or not isinstance(r.get("category_id"), int) or not _is_number(r.get("score"))]
    if bad:
        raise EvaluationInputError(f"{name}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} without an integer "
                                   f"'image_id' and 'category_id' and a finite 'score' (entries {_shown(bad)})")
    return list(data), name


def resolve_tasks(tasks: Optional[Sequence[str]], results: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The tasks to analyze: ``tasks`` checked, or (``None``) "bbox", plus "segm" when the results
    carry a ``segmentation`` (as the COCO evaluator decides from the predictions)."""
    if tasks is None:
        return ("bbox", "segm") if any("segmentation" in r for r in results) else ("bbox",)
    if isinstance(tasks, str):
        tasks = (tasks,)
    for task in tasks:
        if task not in TASKS:
            raise EvaluationInputError(f"unknown task {task!r}; valid: {list(TASKS)}.{did_you_mean(str(task), TASKS)}")
    if not tasks or len(set(tasks)) != len(tasks):
        raise EvaluationInputError(f"tasks must be a non-empty list without repeats, got {list(tasks)}")
    return tuple(tasks)


def check_results(coco_gt: Any, results: Sequence[Mapping[str, Any]], *, tasks: Sequence[str], gt_name: str,
                  results_name: str) -> None:
    """Refuse results the analysis of ``tasks`` cannot use: on image ids or category ids that
    ``coco_gt`` does not have, without a ``bbox`` ("bbox") or ``segmentation`` ("segm")."""
    image_ids = set(coco_gt.getImgIds())
    unknown = sorted({r["image_id"] for r in results} - image_ids)
    if unknown:
        n = sum(r["image_id"] not in image_ids for r in results)
        raise EvaluationInputError(
            f"{results_name}: {n} detection(s) are on image ids that are not images of {gt_name}: {_shown(unknown)} "
            f"(its {len(image_ids)} image ids: {_shown(sorted(image_ids))}); were they made on another dataset?")
    categories = {c["id"]: c.get("name", str(c["id"])) for c in coco_gt.dataset["categories"]}
    unknown = sorted({r["category_id"] for r in results} - set(categories))
    if unknown:
        valid = [f"{i} ({categories[i]})" for i in sorted(categories)]
        raise EvaluationInputError(
            f"{results_name}: category ids {_shown(unknown)} are not categories of {gt_name} (valid: {_shown(valid)}); "
            "results must use the json's own category ids, not contiguous class indices")
    for task, key in (("bbox", "bbox"), ("segm", "segmentation")):
        if task not in tasks:
            continue
        check = _is_box if key == "bbox" else _is_mask
        bad = [i for i, r in enumerate(results) if not check(r.get(key))]
        if bad:
            other = "segm" if task == "bbox" else "bbox"
            raise EvaluationInputError(
                f"{results_name}: {len(bad)} of {len(results)} detections have no {key!r} "
                f"({'an [x, y, w, h] box' if key == 'bbox' else 'an RLE {counts, size} or polygons'}; entries "
                f"{_shown(bad)}), which the {task} analysis needs; analyze {other} only (tasks=['{other}'], --tasks {other})")
    if "segm" in tasks:
        # An RLE of another size than its image (e.g. masks left at the network's input size) would
        # fail deep in pycocotools' IoU.
        imgs = coco_gt.imgs
        bad = [i for i, r in enumerate(results) if isinstance(r["segmentation"], Mapping)
               and list(r["segmentation"]["size"]) != [imgs[r["image_id"]].get("height"), imgs[r["image_id"]].get("width")]]
        if bad:
            r = results[bad[0]]
            raise EvaluationInputError(
                f"{results_name}: {len(bad)} detection masks are not the size of their image (entries {_shown(bad)}; "
                f"e.g. an RLE of size {list(r['segmentation']['size'])} on image {r['image_id']}, which is "
                f"{imgs[r['image_id']].get('height')}x{imgs[r['image_id']].get('width')} in {gt_name})")


def check_ground_truth_for(coco_gt: Any, task: str, *, image_ids: Sequence[int], gt_name: str) -> None:
    """Refuse a ``segm`` analysis of a ground truth whose annotations on ``image_ids`` lack masks
    (a ``segmentation``), or whose images lack the ``height`` / ``width`` that polygons need."""
    if task != "segm":
        return
    annotations = [a for i in image_ids for a in coco_gt.imgToAnns.get(i, [])]
    bad = [a["id"] for a in annotations if not a.get("segmentation")]
    if bad:
        raise EvaluationInputError(
            f"{gt_name}: {len(bad)} of {len(annotations)} annotations have no 'segmentation' (annotation ids "
            f"{_shown(bad)}): the segm (mask) analysis needs masks in the ground truth; analyze boxes only "
            "(tasks=['bbox'], --tasks bbox)")
    sizes = [i for i in image_ids
             if not (_is_number(coco_gt.imgs[i].get("height")) and _is_number(coco_gt.imgs[i].get("width")))]
    if sizes:
        raise EvaluationInputError(f"{gt_name}: images {_shown(sizes)} have no 'height' / 'width', which the segm "
                                   "analysis needs to rasterize polygons")
