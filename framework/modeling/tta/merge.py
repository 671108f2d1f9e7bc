"""Merging the detections of several views of one image: boxes by per-class NMS, mask
probabilities (and per-detection values a mask branch sets) by their mean over the views."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from framework.structures import Instances

from .views import View

__all__ = ["merge_detections", "average_over_views"]

#: Every detection of a view passed its model's score threshold already; detectron2's merge keeps
#: anything above this.
_MERGE_SCORE_THRESH = 1e-8

#: Fields of a mask pass's output that are not averaged: the given boxes (in each view's frame)
#: and classes, and the masks (averaged separately: flipped views are mirrored back first).
_GIVEN_FIELDS = ("pred_boxes", "pred_classes", "pred_masks")


def merge_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    image_size: tuple[int, int],
    *,
    nms_thresh: float,
    max_detections: int,
) -> Instances:
    """The union of the views' detections, all in the original image, reduced as detectron2's
    ``_merge_detections`` does: clipped to ``image_size``, per-class NMS at ``nms_thresh``, the
    ``max_detections`` best kept (the Fast R-CNN inference, :func:`fast_rcnn_inference`).

    Args:
        boxes: (N, 4) XYXY; scores: (N,); classes: (N,) int64.
    Returns:
        Instances of ``image_size`` with ``pred_boxes``, ``scores``, ``pred_classes``, best first.
    """
    num_classes = int(classes.max()) + 1 if len(classes) else 1
    # (N, K + 1) with background last, each row holding its detection's score at its class: only
    # those entries pass the threshold, so NMS sees exactly the N (box, class) pairs.
    scores_2d = scores.new_zeros(len(scores), num_classes + 1)
    scores_2d[torch.arange(len(scores), device=scores.device), classes] = scores
    merged, _ = fast_rcnn_inference([boxes], [scores_2d], [image_size], score_thresh=_MERGE_SCORE_THRESH,
                                    nms_thresh=nms_thresh, topk_per_image=max_detections)
    return merged[0]


def average_over_views(outputs: Sequence[Instances], views: Sequence[View], merged: Instances) -> Instances:
    """``merged`` with the mean over the views of what a mask pass on its boxes predicted.

    Args:
        outputs: per view, the model's output for ``merged``'s detections (in that view's frame),
            same order: ``pred_masks`` (R, 1, M, M) probabilities in box coordinates (mirrored
            back here for a flipped view, so only the flip needs undoing) and any per-detection
            value the mask branch sets or changes, (R,) floats (Mask Scoring R-CNN's rescored
            ``scores`` and ``mask_iou``), averaged too.
        views: the view of each output.
        merged: the merged detections, in the original image.
    Returns:
        a new Instances: ``merged``'s fields, ``pred_masks`` the mean probabilities, and the
        averaged values.
    """
    n = len(merged)
    if any(len(o) != n for o in outputs):
        raise RuntimeError(f"test-time augmentation: the mask pass returned {[len(o) for o in outputs]} detections "
                           f"per view for {n} given ones; the RoI heads' forward_with_given_boxes must keep every "
                           "given detection, in order")
    masks = [o.pred_masks.flip(-1) if v.flip else o.pred_masks for o, v in zip(outputs, views)]
    if len({tuple(m.shape) for m in masks}) > 1:
        raise RuntimeError(f"test-time augmentation: mask predictions of different shapes over the views "
                           f"({sorted({tuple(m.shape) for m in masks})}); they are averaged in box coordinates, "
                           "so the mask head must give the same resolution for any image size")
    out = Instances(merged.image_size, **merged.get_fields())
    out.pred_masks = torch.stack(masks).mean(dim=0)
    for name in outputs[0].get_fields():
        if name in _GIVEN_FIELDS:
            continue
        values = [o.get(name) for o in outputs]
        if merged.has(name) and all(torch.equal(v, merged.get(name)) for v in values):
            continue  # passed through unchanged (the scores of plain Mask R-CNN): keep it exact
        if not all(isinstance(v, torch.Tensor) and v.is_floating_point() and v.shape == (n,) for v in values):
            raise RuntimeError(f"test-time augmentation: the mask pass sets field {name!r}, which is not one float "
                               "per detection; only masks and per-detection values can be averaged over views")
        out.set(name, torch.stack(values).mean(dim=0))
    return out
