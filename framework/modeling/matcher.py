"""Matcher: assign each prediction (anchor / proposal) a ground-truth index and a fg / bg / ignore label."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["Matcher"]


class Matcher:
    """Match M ground-truth elements to N predictions by a quality matrix (usually IoU).

    Each prediction takes its best ground truth; its label comes from the interval of ``thresholds``
    that its best quality falls in. With ``thresholds=[0.3, 0.7]`` and ``labels=[0, -1, 1]``:
    quality < 0.3 -> 0 (background), 0.3 <= quality < 0.7 -> -1 (ignored), >= 0.7 -> 1 (foreground).

    Args:
        thresholds: K increasing thresholds, all > 0 (the first must be > 0 as in detectron2).
        labels: K + 1 labels in {-1, 0, 1}, one per interval [-inf, t1), [t1, t2), ..., [tK, inf).
        allow_low_quality_matches: also label 1 every prediction that is tied for the highest quality
            with some ground truth, even if below the top threshold (Faster R-CNN RPN rule (i)), so
            that every ground truth gets at least one positive.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        labels = list(labels)
        if not thresholds or thresholds[0] <= 0:
            raise ValueError(f"Matcher thresholds must be a non-empty list starting above 0, got {thresholds}")
        if any(lo > hi for lo, hi in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be non-decreasing, got {thresholds}")
        if any(label not in (-1, 0, 1) for label in labels):
            raise ValueError(f"Matcher labels must each be -1 (ignore), 0 (background) or 1 (foreground), got {labels}")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher needs one more label than thresholds: got {len(thresholds)} thresholds "
                f"{thresholds} and {len(labels)} labels {labels}"
            )
        # Pad with -inf / +inf so that every quality value falls in exactly one [low, high) interval.
        self.thresholds = [-float("inf"), *thresholds, float("inf")]
        self.labels = labels
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Match predictions to ground truth.

        Args:
            match_quality_matrix: (M, N) qualities >= 0 between M ground truths and N predictions.

        Returns:
            matches: (N,) int64, index in [0, M) of the best ground truth of each prediction
                (0 when M == 0).
            match_labels: (N,) int8 in {-1, 0, 1}; all ``labels[0]`` when M == 0 (no ground truth
                means quality 0 everywhere).
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(
                f"Matcher expects an (M gt, N predictions) matrix, got shape {tuple(match_quality_matrix.shape)}"
            )
        num_preds = match_quality_matrix.size(1)
        if match_quality_matrix.numel() == 0:
            matches = match_quality_matrix.new_full((num_preds,), 0, dtype=torch.int64)
            match_labels = match_quality_matrix.new_full((num_preds,), self.labels[0], dtype=torch.int8)
            return matches, match_labels

        if not bool((match_quality_matrix >= 0).all()):
            raise ValueError("Matcher: match_quality_matrix must be >= 0 everywhere")

        matched_vals, matches = match_quality_matrix.max(dim=0)  # best gt per prediction
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            match_labels[(matched_vals >= low) & (matched_vals < high)] = label

        if self.allow_low_quality_matches:
            self._set_low_quality_matches_(match_labels, match_quality_matrix)
        return matches, match_labels

    @staticmethod
    def _set_low_quality_matches_(match_labels: torch.Tensor, match_quality_matrix: torch.Tensor) -> None:
        """Label 1, in place, every prediction tied for the highest quality of some ground truth.

        ``matches`` is left alone: such a prediction keeps its own argmax ground truth, as in detectron2.
        """
        highest_quality_foreach_gt = match_quality_matrix.max(dim=1).values  # (M,)
        # Ties count: every prediction that reaches a gt's best quality is promoted.
        pred_inds = torch.nonzero(match_quality_matrix == highest_quality_foreach_gt[:, None])[:, 1]
        match_labels[pred_inds] = 1

    def __repr__(self) -> str:
        return (
            f"Matcher(thresholds={self.thresholds[1:-1]}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )
