"""Training targets of the RoI heads: match proposals to ground truth, label them, sample a batch.

Plain functions, so that a variant composes them instead of copying StandardROIHeads: Mask R-CNN
labels and samples the RPN proposals once; Cascade R-CNN labels the boxes of each later stage again
with a stricter matcher and keeps all of them (``batch_size_per_image=None``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.modeling.matcher import Matcher
from framework.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from framework.modeling.sampling import subsample_labels
from framework.structures import Instances, pairwise_iou
from framework.utils.events import put_scalars

__all__ = ["label_and_sample_proposals", "label_proposals", "log_sample_counts", "select_foreground_proposals"]


@torch.no_grad()
def label_proposals(
    proposals: Sequence[Instances],
    targets: Sequence[Instances],
    *,
    matcher: Matcher,
    num_classes: int,
    batch_size_per_image: int | None = None,
    positive_fraction: float = 0.25,
) -> tuple[list[Instances], list[int], list[int]]:
    """Match each image's proposals to its gt by IoU, optionally sample them, copy the matched gt on.

    Args:
        proposals: per image, ``proposal_boxes`` (Ri boxes).
        targets: per image, ``gt_boxes`` and ``gt_classes`` (and any other ``gt_*`` field, e.g. ``gt_masks``).
        matcher: IoU thresholds and labels (label 1 = foreground, 0 = background, -1 = ignore).
        num_classes: K; background is labelled K.
        batch_size_per_image, positive_fraction: keep at most ``batch_size_per_image`` proposals per
            image, at most ``positive_fraction`` of them foreground
            (:func:`framework.modeling.sampling.subsample_labels`; foreground first). ``None`` keeps
            every proposal in its order (Cascade R-CNN's later stages).
    Returns:
        per image the kept proposals with ``gt_classes`` (Ri,) int64 (K for background, -1 for
        ignored) and, for images with gt, every other ``gt_*`` field of the matched gt (copied after
        sampling: indexing polygon masks costs per proposal). An image without gt gets no
        ``gt_boxes``: its proposals are all background and box losses read only the foreground.
        Then the numbers of foreground and background proposals kept, per image.
    """
    labelled, num_fg, num_bg = [], [], []
    for props, gt in zip(proposals, targets):
        matched_idxs, matched_labels = matcher(pairwise_iou(gt.gt_boxes, props.proposal_boxes))
        if len(gt) > 0:
            gt_classes = gt.gt_classes[matched_idxs]
            gt_classes[matched_labels == 0] = num_classes
            gt_classes[matched_labels == -1] = -1
        else:
            gt_classes = torch.full_like(matched_idxs, num_classes)
        if batch_size_per_image is None:
            is_fg = (gt_classes >= 0) & (gt_classes != num_classes)
            fg, bg = int(is_fg.sum()), int((gt_classes == num_classes).sum())
        else:
            fg_idx, bg_idx = subsample_labels(gt_classes, batch_size_per_image, positive_fraction, num_classes)
            idx = torch.cat([fg_idx, bg_idx])
            props, gt_classes, matched_idxs = props[idx], gt_classes[idx], matched_idxs[idx]
            fg, bg = len(fg_idx), len(bg_idx)
        out = Instances(props.image_size, **props.get_fields())
        out.gt_classes = gt_classes
        if len(gt) > 0:
            for name, value in gt.get_fields().items():
                if name.startswith("gt_") and not out.has(name):
                    out.set(name, value[matched_idxs])
        labelled.append(out)
        num_fg.append(fg)
        num_bg.append(bg)
    return labelled, num_fg, num_bg


def label_and_sample_proposals(
    proposals: Sequence[Instances],
    targets: Sequence[Instances],
    *,
    matcher: Matcher,
    num_classes: int,
    batch_size_per_image: int,
    positive_fraction: float,
    append_gt: bool,
) -> list[Instances]:
    """The RoI heads' training targets for RPN proposals: optionally add the gt boxes to them
    (``append_gt``), then :func:`label_proposals` with sampling, and log the sample counts.

    Returns per image the sampled proposals with ``gt_classes`` (K for background) and, for images
    with gt, every ``gt_*`` field of their matched gt (``gt_boxes``, ``gt_masks``).
    """
    if append_gt:
        proposals = add_ground_truth_to_proposals(targets, proposals)
    sampled, num_fg, num_bg = label_proposals(
        proposals,
        targets,
        matcher=matcher,
        num_classes=num_classes,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=positive_fraction,
    )
    log_sample_counts(num_fg, num_bg)
    return sampled


def log_sample_counts(num_fg: Sequence[int], num_bg: Sequence[int]) -> None:
    """``roi_head/num_fg_samples`` / ``num_bg_samples``: the mean per image (in the current name scope)."""
    put_scalars(
        **{
            "roi_head/num_fg_samples": sum(num_fg) / max(len(num_fg), 1),
            "roi_head/num_bg_samples": sum(num_bg) / max(len(num_bg), 1),
        }
    )


def select_foreground_proposals(proposals: Sequence[Instances], bg_label: int) -> list[Instances]:
    """Per image, the proposals whose ``gt_classes`` is a real class (not background, not ignored)."""
    return [p[(p.gt_classes != -1) & (p.gt_classes != bg_label)] for p in proposals]
