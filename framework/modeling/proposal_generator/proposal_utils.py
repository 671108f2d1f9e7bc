"""Selecting proposals from dense RPN predictions, and adding ground truth to them."""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import torch

from framework.layers.graph_capture import is_exporting, known_all
from framework.layers.parallel_ops import batched_nms
from framework.structures import Boxes, Instances
from framework.utils.events import put_scalars

__all__ = ["find_top_rpn_proposals", "add_ground_truth_to_proposals"]

logger = logging.getLogger(__name__)


def find_top_rpn_proposals(
    proposals: Sequence[torch.Tensor],
    pred_objectness_logits: Sequence[torch.Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    nms_thresh: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    min_box_size: float,
    training: bool,
    level_names: Optional[Sequence[str]] = None,
) -> list[Instances]:
    """Per level keep the ``pre_nms_topk`` highest-scoring boxes, then per image clip, drop small
    boxes, run NMS within each level (``batched_nms`` with the level as the class) and keep the
    ``post_nms_topk`` best over all levels.

    Candidates with a non-finite box or score (a diverging RPN) are never silently dropped. In
    training they raise ``FloatingPointError`` (as detectron2: the loss is about to be NaN, and the
    trainer's non-finite-loss handling cannot skip an error raised here). At inference they are
    left out, and counted: one warning per call names, per image and level, how many of how many
    candidates went, and their total is put as the scalar ``rpn/nonfinite_proposals`` into the
    current EventStorage, if any (e.g. an evaluation during training; nothing is put when no
    candidate was left out).

    Args:
        proposals: per level (N, Hi*Wi*A, 4) decoded boxes.
        pred_objectness_logits: per level (N, Hi*Wi*A).
        image_sizes: (h, w) of each image before padding.
        level_names: a name per level for the messages (the RPN's ``in_features``); default
            ``level 0``, ``level 1``, ...
    Returns:
        per image Instances with ``proposal_boxes`` (Boxes) and ``objectness_logits`` (R,), sorted by score.

    Raises:
        FloatingPointError: in training, when a candidate box or score is NaN or infinite.
    """
    num_images = len(image_sizes)
    device = proposals[0].device if proposals else torch.device("cpu")
    batch_idx = torch.arange(num_images, device=device)
    topk_scores, topk_proposals, level_ids = [], [], []
    for level, (boxes_l, logits_l) in enumerate(zip(proposals, pred_objectness_logits)):
        n = logits_l.shape[1]  # an int; a SymInt while torch.export records; a Tensor under torch.jit.trace
        k = torch.sym_min(n, pre_nms_topk) if isinstance(n, torch.SymInt) else min(n, pre_nms_topk)
        scores_l, idx = logits_l.topk(k, dim=1)  # (N, k), sorted
        topk_scores.append(scores_l)
        topk_proposals.append(boxes_l[batch_idx[:, None], idx])  # (N, k, 4)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=device))
    scores_all = torch.cat(topk_scores, dim=1)
    boxes_all = torch.cat(topk_proposals, dim=1)
    levels_all = torch.cat(level_ids, dim=0)

    candidates = [t.shape[1] for t in topk_scores]  # per level, the same for every image
    names = list(level_names) if level_names is not None else [f"level {i}" for i in range(len(candidates))]
    dropped: list[str] = []  # per image, where its non-finite candidates were
    num_dropped = 0
    results = []
    for n, image_size in enumerate(image_sizes):
        boxes, scores, levels = Boxes(boxes_all[n]), scores_all[n], levels_all
        valid = torch.isfinite(boxes.tensor).all(dim=1) & torch.isfinite(scores)
        if is_exporting():  # a graph cannot count or warn: it always drops the non-finite candidates
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        elif not valid.all():
            per_level = torch.bincount(levels[~valid], minlength=len(candidates)).tolist()
            where = ", ".join(f"{names[i]}: {c} of {candidates[i]}" for i, c in enumerate(per_level) if c)
            dropped.append(f"image {n} ({image_size[0]}x{image_size[1]}): {sum(per_level)} of {len(scores)} ({where})")
            num_dropped += sum(per_level)
            if training:
                raise FloatingPointError(
                    f"RPN predicted non-finite boxes or scores in training, so training has diverged: "
                    f"{dropped[-1]} of the top-scoring candidates are NaN or infinite"
                )
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        boxes.clip(image_size)
        keep = boxes.nonempty(threshold=min_box_size)
        if not known_all(keep):
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes.tensor, scores, levels, nms_thresh, num_classes=len(candidates))[:post_nms_topk]
        res = Instances(image_size)
        res.proposal_boxes = boxes[keep]
        res.objectness_logits = scores[keep]
        results.append(res)
    if dropped:
        # Left out so that inference still gives the finite proposals, but never silently: a
        # diverged or corrupted model shows here first.
        logger.warning(
            f"RPN: left out {num_dropped} proposal candidates with NaN or infinite boxes or scores, "
            f"in {len(dropped)} of {num_images} images: {'; '.join(dropped)}"
        )
        put_scalars(smoothing_hint=False, **{"rpn/nonfinite_proposals": num_dropped})
    return results


def add_ground_truth_to_proposals(targets: Sequence[Instances], proposals: Sequence[Instances]) -> list[Instances]:
    """Append each image's gt boxes to its proposals, with a near-certain objectness logit.

    Gives the RoI heads positive samples from the first iteration, when RPN proposals are poor.
    """
    out = []
    for gt, props in zip(targets, proposals):
        device = props.objectness_logits.device
        # logit of probability 1 - 1e-10, as detectron2
        gt_logit = math.log((1.0 - 1e-10) / (1 - (1.0 - 1e-10)))
        gt_props = Instances(props.image_size)
        gt_props.proposal_boxes = gt.gt_boxes.to(device)
        gt_props.objectness_logits = torch.full((len(gt),), gt_logit, device=device)
        for name, value in gt.get_fields().items():
            if name.startswith("gt_") and props.has(name):
                gt_props.set(name, value)
        out.append(Instances.cat([props, gt_props]))
    return out
