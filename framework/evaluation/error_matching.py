"""Which detections are correct, and which kind of error every other one is, in the sense of TIDE
(Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020; the
rules below are those of its reference implementation, github.com/dbolya/tide, v1.0.1).

Per image of the ground truth (in the json's order), with ``fg`` the foreground IoU (0.5) and
``bg`` the background IoU (0.1); IoU is box IoU (``bbox``) or mask IoU (``segm``, pycocotools):

1. Detections are sorted by score (descending; ties keep the results' order), at most ``max_dets``
   kept. Each in turn takes the not yet taken ground-truth object of its own class with the
   highest IoU, if that IoU is >= fg: a true positive (first maximum on ties).
2. A detection left unmatched whose crowd-IoU (intersection over the detection's area) with a
   crowd region of its class is > fg is *ignored*: it is not in the AP (as in COCOeval), but it is
   still given an error type below, and fixing that error can still make it a true positive.
3. Every other detection gets the first error type that applies, in this order:
   ``loc``  its highest IoU with an object of its class is within [bg, fg];
   ``cls``  its highest IoU with an object of another class is >= fg;
   ``dupe`` its IoU with an object of its class that another detection took is >= fg;
   ``bkg``  its IoU with every object is <= bg (on an image without objects, always);
   ``both`` anything else (wrong class and poorly localized).
4. An object no detection took is *missed* (``miss``), unless a ``cls`` or ``loc`` error is about
   it: fixing that error recovers it. Of all the ``cls`` / ``loc`` errors about one untaken
   object, only the first (highest-scoring) becomes its true positive when fixed; fixing any
   other (or one about an object already taken) removes the detection.

The result, :class:`ErrorAssignment`, is what :mod:`framework.evaluation.error_ap` turns into AP
lost per error type, and what a gallery of failures can draw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["ERROR_TYPES", "CORRECT", "CLS", "LOC", "BOTH", "DUPE", "BKG", "ErrorAssignment", "assign_errors"]

#: The error types, in TIDE's order (``miss`` is an error of an object, the others of a detection).
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
#: Codes in :attr:`ErrorAssignment.det_error`: a correct detection, then the index in ERROR_TYPES.
CORRECT, CLS, LOC, BOTH, DUPE, BKG = -1, 0, 1, 2, 3, 4


@dataclass(frozen=True)
class ErrorAssignment:
    """Correct detections, error types and missed objects of one task, as numpy arrays.

    Detections (D of them: those of the analyzed images, at most ``max_dets`` per image) are in the
    order the AP reads them: by image (ground-truth order), then by descending score.

    Attributes:
        task: "bbox" or "segm".
        det_result_index: (D,) int64, position of the detection in the results list.
        det_image_id, det_category: (D,) int64, its image and (dataset) category id.
        det_score: (D,) float64.
        det_error: (D,) int8, ``CORRECT`` or the error code (``CLS``, ``LOC``, ``BOTH``, ``DUPE``, ``BKG``).
        det_ignored: (D,) bool, on a crowd region of its class: not counted by the AP.
        det_gt: (D,) int64, annotation id of the object a correct detection took, or that its
            ``cls`` / ``loc`` / ``dupe`` error is about; -1 otherwise.
        det_fix_category: (D,) int64, the category under which fixing its error makes it a true
            positive (the object's category for ``cls``); -1 when the fix removes it.
        gt_ann_id, gt_image_id, gt_category: (G,) int64, the non-crowd objects of the analyzed images.
        gt_matched: (G,) bool, taken by a correct detection.
        gt_missed: (G,) bool, a ``miss`` error: not taken, and no ``cls`` / ``loc`` error is about it.
        num_dropped: detections beyond ``max_dets`` on their image, left out of everything.
    """

    task: str
    det_result_index: np.ndarray
    det_image_id: np.ndarray
    det_category: np.ndarray
    det_score: np.ndarray
    det_error: np.ndarray
    det_ignored: np.ndarray
    det_gt: np.ndarray
    det_fix_category: np.ndarray
    gt_ann_id: np.ndarray
    gt_image_id: np.ndarray
    gt_category: np.ndarray
    gt_matched: np.ndarray
    gt_missed: np.ndarray
    num_dropped: int = 0

    def error_counts(self) -> dict[str, int]:
        """``{error type: number}`` (detections for cls..bkg, objects for miss), ignored detections included as TIDE counts them."""
        counts = {name: int((self.det_error == code).sum()) for code, name in enumerate(ERROR_TYPES[:-1])}
        counts["miss"] = int(self.gt_missed.sum())
        return counts


def _to_rle(segmentation: Any, height: int, width: int) -> Any:
    """Polygons or an uncompressed RLE -> compressed RLE (pycocotools' form); a compressed RLE as it is."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def _iou(dets: Any, gts: Any, *, crowd: bool) -> np.ndarray:
    """(len(dets), len(gts)) IoU (``crowd``: intersection over the detection's area) of XYWH boxes or RLEs."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_util.iou(dets, gts, [int(crowd)] * len(gts)), dtype=np.float64).reshape(len(dets), len(gts))


def _match_image(det_category: np.ndarray, iou: np.ndarray, crowd_iou: np.ndarray, gt_category: np.ndarray,
                 crowd_category: np.ndarray, *, fg: float, bg: float) -> tuple[np.ndarray, ...]:
    """Steps 1-4 of the module docstring on one image whose P detections are sorted by score.

    Args:
        det_category: (P,); iou: (P, G) with the non-crowd objects; crowd_iou: (P, R) with the crowd
        regions; gt_category: (G,); crowd_category: (R,).

    Returns:
        ``(error (P,), ignored (P,), target (P,) object index or -1, fix_category (P,), taken (G,), missed (G,))``.
    """
    P, G = iou.shape
    same = det_category[:, None] == gt_category[None, :]
    same_iou = np.where(same, iou, 0.0)
    target = np.full(P, -1, dtype=np.int64)
    taken = np.zeros(G, dtype=bool)
    free = same_iou.copy()
    # Only a detection reaching fg with some object of its class can match: skip the others.
    for p in np.flatnonzero(same_iou.max(axis=1, initial=0.0) >= fg):
        j = int(free[p].argmax())
        if free[p, j] >= fg:
            target[p], taken[j] = j, True
            free[:, j] = 0.0
    wrong = target < 0
    ignored = np.zeros(P, dtype=bool)
    if crowd_iou.shape[1]:
        on_crowd = (crowd_iou > fg) & (det_category[:, None] == crowd_category[None, :])
        ignored = wrong & on_crowd.any(axis=1)

    error = np.full(P, CORRECT, dtype=np.int8)
    if G == 0:
        error[wrong] = BKG
    else:
        loc_iou = same_iou.max(axis=1)
        other_iou = np.where(same, 0.0, iou)
        taken_iou = np.where(same & taken[None, :], iou, 0.0)
        conditions = [(bg <= loc_iou) & (loc_iou <= fg), other_iou.max(axis=1) >= fg, taken_iou.max(axis=1) >= fg,
                      iou.max(axis=1) <= bg]
        kind = np.select(conditions, [LOC, CLS, DUPE, BKG], BOTH).astype(np.int8)
        about = np.select(conditions[:3], [same_iou.argmax(axis=1), other_iou.argmax(axis=1), taken_iou.argmax(axis=1)], -1)
        error[wrong], target[wrong] = kind[wrong], about[wrong]

    fix_category = np.full(P, -1, dtype=np.int64)
    recoverable = np.zeros(G, dtype=bool)
    for p in np.flatnonzero((error == CLS) | (error == LOC)):  # in score order: the first one per object wins
        j = target[p]
        if taken[j]:
            continue
        if not recoverable[j]:
            fix_category[p] = gt_category[j]  # for loc the detection's own category
        recoverable[j] = True
    return error, ignored, target, fix_category, taken, ~taken & ~recoverable


def assign_errors(
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    *,
    task: str,
    image_ids: Optional[Sequence[int]] = None,
    fg_iou: float = 0.5,
    bg_iou: float = 0.1,
    max_dets: int = 100,
) -> ErrorAssignment:
    """Match ``results`` to ``coco_gt`` and give every wrong detection / missed object its error type.

    Args:
        coco_gt: a pycocotools-style ``COCO`` (``dataset``, ``imgs``, ``imgToAnns``); crowd
            annotations (``iscrowd``) are ignore regions.
        results: COCO result dicts (``image_id``, ``category_id``, ``score``, XYWH ``bbox``;
            ``segmentation`` as RLE or polygons for "segm"), checked beforehand
            (:mod:`framework.evaluation.error_inputs`). Not modified.
        task: "bbox" (box IoU) or "segm" (mask IoU).
        image_ids: analyze these images of ``coco_gt`` only (``None``: all); results on others are left out.
        fg_iou, bg_iou: the foreground and background IoU thresholds (TIDE: 0.5, 0.1).
        max_dets: detections kept per image, highest scores first (TIDE: 100, over all classes).
    """
    if not 0.0 <= bg_iou <= fg_iou <= 1.0:
        raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
    if int(max_dets) < 1:
        raise ValueError(f"max_dets must be >= 1, got {max_dets}")
    images = [img["id"] for img in coco_gt.dataset["images"]]
    if image_ids is not None:
        wanted = set(image_ids)
        images = [i for i in images if i in wanted]
    by_image: dict[int, list[int]] = defaultdict(list)
    for k, r in enumerate(results):
        by_image[r["image_id"]].append(k)
    scores = np.array([r["score"] for r in results], dtype=np.float64)
    categories = np.array([r["category_id"] for r in results], dtype=np.int64)

    det_parts: dict[str, list[np.ndarray]] = defaultdict(list)
    gt_parts: dict[str, list[np.ndarray]] = defaultdict(list)
    dropped = 0
    for image_id in images:
        annotations = coco_gt.imgToAnns.get(image_id, [])
        objects = [a for a in annotations if not a.get("iscrowd", 0)]
        crowds = [a for a in annotations if a.get("iscrowd", 0)]
        index = np.array(by_image.get(image_id, []), dtype=np.int64)
        index = index[np.argsort(-scores[index], kind="stable")]
        dropped += max(0, len(index) - int(max_dets))
        index = index[: int(max_dets)]
        if task == "segm":
            h, w = coco_gt.imgs[image_id]["height"], coco_gt.imgs[image_id]["width"]
            dets = [_to_rle(results[k]["segmentation"], h, w) for k in index]
            gts = [_to_rle(a["segmentation"], h, w) for a in objects]
            regions = [_to_rle(a["segmentation"], h, w) for a in crowds]
        else:
            dets = np.array([results[k]["bbox"] for k in index], dtype=np.float64).reshape(-1, 4)
            gts = np.array([a["bbox"] for a in objects], dtype=np.float64).reshape(-1, 4)
            regions = np.array([a["bbox"] for a in crowds], dtype=np.float64).reshape(-1, 4)
        gt_category = np.array([a["category_id"] for a in objects], dtype=np.int64)
        gt_ids = np.array([a["id"] for a in objects], dtype=np.int64)
        error, ignored, target, fix_category, taken, missed = _match_image(
            categories[index], _iou(dets, gts, crowd=False), _iou(dets, regions, crowd=True), gt_category,
            np.array([a["category_id"] for a in crowds], dtype=np.int64), fg=fg_iou, bg=bg_iou)
        det_parts["result_index"].append(index)
        det_parts["image_id"].append(np.full(len(index), image_id, dtype=np.int64))
        det_parts["error"].append(error)
        det_parts["ignored"].append(ignored)
        det_parts["gt"].append(np.where(target >= 0, gt_ids[np.maximum(target, 0)] if len(gt_ids) else -1, -1))
        det_parts["fix_category"].append(fix_category)
        gt_parts["ann_id"].append(gt_ids)
        gt_parts["image_id"].append(np.full(len(objects), image_id, dtype=np.int64))
        gt_parts["category"].append(gt_category)
        gt_parts["matched"].append(taken)
        gt_parts["missed"].append(missed)

    def cat(parts: dict[str, list[np.ndarray]], key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype, copy=False) if parts[key] else np.zeros(0, dtype=dtype)

    result_index = cat(det_parts, "result_index", np.int64)
    return ErrorAssignment(
        task=task,
        det_result_index=result_index,
        det_image_id=cat(det_parts, "image_id", np.int64),
        det_category=categories[result_index],
        det_score=scores[result_index],
        det_error=cat(det_parts, "error", np.int8),
        det_ignored=cat(det_parts, "ignored", bool),
        det_gt=cat(det_parts, "gt", np.int64),
        det_fix_category=cat(det_parts, "fix_category", np.int64),
        gt_ann_id=cat(gt_parts, "ann_id", np.int64),
        gt_image_id=cat(gt_parts, "image_id", np.int64),
        gt_category=cat(gt_parts, "category", np.int64),
        gt_matched=cat(gt_parts, "matched", bool),
        gt_missed=cat(gt_parts, "missed", bool),
        num_dropped=dropped,
    )
