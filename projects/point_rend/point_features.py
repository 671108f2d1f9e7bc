"""Point sampling for PointRend: features and logits read at continuous points, and where to put them.

Coordinates: a point in a box is (x, y) in [0, 1]^2 of that box ("box-normalised"); in an image it
is (x, y) in pixels of the (resized, unpadded) input. Shapes: R boxes over all images, P points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from framework.structures import Boxes
from framework.structures.size_checks import known_true

__all__ = [
    "point_sample",
    "regular_grid_points",
    "uncertain_points_with_randomness",
    "uncertain_points_on_grid",
    "points_in_image",
    "sample_point_features",
    "uncertainty",
]


def point_sample(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``x`` at points in [0, 1]^2 of its extent (``grid_sample``,
    align_corners=False: cell centres at (i + 0.5) / size; zeros outside).

    Args:
        x: (N, C, H, W). points: (N, P, 2) as (x, y).
    Returns:
        (N, C, P).
    """
    return F.grid_sample(x, 2.0 * points.unsqueeze(2).to(x.dtype) - 1.0, align_corners=False).squeeze(3)


def regular_grid_points(num_boxes: int, side: int, device: torch.device) -> torch.Tensor:
    """The centres of a ``side`` x ``side`` grid of cells over [0, 1]^2, row-major: (R, side^2, 2)."""
    centres = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(num_boxes, -1, -1)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """PointRend's uncertainty of a logit: ``-|logit|`` (highest at the decision boundary)."""
    return -logits.abs()


def uncertain_points_with_randomness(
    coarse_logits: torch.Tensor,
    num_points: int,
    *,
    oversample_ratio: float,
    importance_sample_ratio: float,
    uncertainty_fn: Callable[[torch.Tensor], torch.Tensor] = uncertainty,
) -> torch.Tensor:
    """Training points (PointRend, Sec. 3.1): draw ``oversample_ratio * num_points`` uniform points,
    keep the ``importance_sample_ratio * num_points`` most uncertain of them (read from the coarse
    logits of the RoI's class), fill up with uniform points.

    Args:
        coarse_logits: (R, 1, H, W) logits of each RoI's class.
    Returns:
        (R, num_points, 2) box-normalised points; uses torch's global generator.
    """
    num_boxes, device = coarse_logits.shape[0], coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_boxes, num_sampled, 2, device=device)
    scores = uncertainty_fn(point_sample(coarse_logits, candidates))[:, 0]  # (R, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(scores, k=num_uncertain, dim=1).indices
    points = torch.gather(candidates, 1, idx[:, :, None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        points = torch.cat([points, torch.rand(num_boxes, num_random, 2, device=device)], dim=1)
    return points


def uncertain_points_on_grid(uncertainty_map: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num_points`` most uncertain cells of an (R, 1, H, W) map (inference's subdivision step).

    Returns:
        indices (R, P) into the H*W cells, and their centres (R, P, 2) box-normalised; P =
        min(num_points, H*W).
    """
    r, _, h, w = uncertainty_map.shape
    num_points = min(h * w, num_points)
    idx = torch.topk(uncertainty_map.reshape(r, h * w), k=num_points, dim=1).indices
    xs = ((idx % w).to(torch.float32) + 0.5) / w
    ys = ((idx // w).to(torch.float32) + 0.5) / h
    return idx, torch.stack([xs, ys], dim=2)


def points_in_image(boxes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Box-normalised points (R, P, 2) of boxes (R, 4) XYXY -> image pixels (R, P, 2)."""
    origin, size = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2])
    return points * size + origin


def sample_point_features(
    features: Sequence[torch.Tensor], strides: Sequence[int], boxes: Sequence[Boxes], points: torch.Tensor
) -> torch.Tensor:
    """Features of every level at each box's points, concatenated over levels.

    Args:
        features: per level (N, C_l, H_l, W_l); a level of stride s covers s*W_l x s*H_l input pixels.
        strides: per level.
        boxes: per image, Ri boxes (R = sum Ri), image pixels.
        points: (R, P, 2) box-normalised.
    Returns:
        (R, sum C_l, P).
    """
    in_image = points_in_image(Boxes.cat(list(boxes)).tensor, points)
    # Counts as shapes (b.tensor.shape[0]), not the builtin len: torch.export records them as
    # symbolic sizes, and a graph must also run with 0 boxes, hence explicit reshape sizes (-1 is
    # ambiguous for an empty tensor).
    per_image = [in_image] if len(boxes) == 1 else in_image.split([b.tensor.shape[0] for b in boxes])
    out = []
    for i, pts in enumerate(per_image):
        num_boxes, num_points = pts.shape[0], pts.shape[1]
        if known_true(num_boxes == 0):
            out.append(in_image.new_zeros(0, sum(f.shape[1] for f in features), points.shape[1]))
            continue
        per_level = []
        for feature, stride in zip(features, strides):
            # scalar_tensor, not new_tensor: a feature's size is symbolic while recording
            extent = torch.stack([torch.scalar_tensor(side * stride, dtype=pts.dtype, device=pts.device)
                                  for side in (feature.shape[-1], feature.shape[-2])])
            flat = (pts / extent).reshape(1, num_boxes * num_points, 2)
            sampled = point_sample(feature[i : i + 1], flat)  # (1, C, Ri*P)
            per_level.append(sampled.reshape(feature.shape[1], num_boxes, num_points).transpose(0, 1))
        out.append(torch.cat(per_level, dim=1))
    return torch.cat(out, dim=0)
