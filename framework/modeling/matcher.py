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
        if not thresholds:
            raise ValueError("Matcher(thresholds=[]): needs at least one threshold, e.g. [0.3, 0.7]")
        if thresholds[0] <= 0:
            raise ValueError(
                f"Matcher(thresholds={thresholds}): thresholds[0] = {thresholds[0]} must be above 0, so that "
                f"quality 0 (a prediction overlapping no ground truth) falls in the first interval, labels[0]"
            )
        for i, (lo, hi) in enumerate(zip(thresholds[:-1], thresholds[1:])):
            if lo > hi:
                raise ValueError(
                    f"Matcher(thresholds={thresholds}): must be non-decreasing, but thresholds[{i + 1}] = {hi} "
                    f"is below thresholds[{i}] = {lo}"
                )
        for i, label in enumerate(labels):
            if label not in (-1, 0, 1):
                raise ValueError(
                    f"Matcher(labels={labels}): labels[{i}] = {label!r}; each label must be -1 (ignore), "
                    f"0 (background) or 1 (foreground)"
                )
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher(thresholds={thresholds}, labels={labels}): needs one more label than thresholds "
                f"(one per interval [-inf, t1), [t1, t2), ..., [tK, inf)), got {len(thresholds)} thresholds and "
                f"{len(labels)} labels"
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
                f"Matcher: match_quality_matrix must be 2-d, (M ground truths, N predictions), got shape "
                f"{tuple(match_quality_matrix.shape)}"
            )
        num_preds = match_quality_matrix.size(1)
        if match_quality_matrix.numel() == 0:
            matches = match_quality_matrix.new_full((num_preds,), 0, dtype=torch.int64)
            match_labels = match_quality_matrix.new_full((num_preds,), self.labels[0], dtype=torch.int8)
            return matches, match_labels

        bad = ~(match_quality_matrix >= 0)  # NaN compares False, so it is caught too
        if bool(bad.any()):
            gt, pred = torch.nonzero(bad)[0].tolist()
            raise ValueError(
                f"Matcher: match_quality_matrix ({tuple(match_quality_matrix.shape)}: ground truths x predictions) "
                f"must be >= 0 everywhere (a quality such as IoU), but {int(bad.sum())} values are negative or "
                f"NaN, e.g. {match_quality_matrix[gt, pred].item()} at ground truth {gt}, prediction {pred}"
            )

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
