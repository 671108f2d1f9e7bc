"""Balanced random sampling of positive / negative labels (RPN anchors, RoI head proposals)."""

from __future__ import annotations

import torch

__all__ = ["subsample_labels"]


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick at most ``num_samples`` random indices, at most ``positive_fraction`` of them positive.

    Positives are taken first, up to ``int(num_samples * positive_fraction)`` or as many as exist;
    the remaining slots are filled with negatives, as many as exist.

    Args:
        labels: (N,) integer labels: -1 = ignore, ``bg_label`` = negative, anything else = positive.
        num_samples: total number of indices wanted.
        positive_fraction: the largest share of positives.
        bg_label: the background label (0 for the RPN, num_classes for the RoI heads).

    Returns:
        pos_idx, neg_idx: 1-d int64 tensors of indices into ``labels``, in random order, on
        ``labels.device``. Randomness comes from ``torch.randperm`` (positives drawn first), so a
        fixed torch seed reproduces detectron2's draws.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]

    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)  # negatives fill the slots positives left

    perm_pos = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]
