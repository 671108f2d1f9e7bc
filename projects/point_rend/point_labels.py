"""Ground-truth labels of a mask at image points, for BitMasks (as detectron2) and PolygonMasks (exact)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from framework.structures import BitMasks, Instances, PolygonMasks

from .point_features import point_sample

__all__ = ["point_labels", "points_in_polygons"]


@torch.no_grad()
def point_labels(instances: Sequence[Instances], points: torch.Tensor) -> torch.Tensor:
    """Each foreground proposal's gt mask read at its points.

    BitMasks: the mask sampled bilinearly at the points (detectron2's ``sample_point_labels``;
    fractional next to the boundary). PolygonMasks: 1 inside the instance's polygons, 0 outside
    (exact; detectron2 requires bitmasks, here polygons need no rasterising).

    Args:
        instances: per image, foreground proposals with ``gt_masks`` (R = sum of their lengths).
        points: (R, P, 2) in image pixels.
    Returns:
        (R, P) float32 labels in [0, 1].
    """
    labels = []
    for inst, pts in zip(instances, points.split([len(i) for i in instances])):
        if len(inst) == 0:
            continue
        masks = inst.gt_masks
        if isinstance(masks, BitMasks):
            h, w = masks.image_size
            scaled = pts / pts.new_tensor([w, h])
            labels.append(point_sample(masks.tensor.to(torch.float32).unsqueeze(1).to(pts.device), scaled)[:, 0])
        elif isinstance(masks, PolygonMasks):
            xy = pts.detach().cpu().to(torch.float64).numpy()
            inside = [points_in_polygons(polygons, p) for polygons, p in zip(masks.polygons, xy)]
            labels.append(torch.from_numpy(np.stack(inside)).to(device=pts.device, dtype=torch.float32))
        else:
            raise TypeError(f"PointRend: gt_masks must be BitMasks or PolygonMasks, got {type(masks).__name__}")
    if not labels:
        return points.new_zeros(0, points.shape[1])
    return torch.cat(labels)


def points_in_polygons(polygons: Sequence[np.ndarray], xy: np.ndarray) -> np.ndarray:
    """Whether each point lies in the union of an instance's polygons (even-odd rule per polygon).

    Args:
        polygons: flat [x0, y0, x1, y1, ...] arrays (COCO's parts of one instance).
        xy: (P, 2) points.
    Returns:
        (P,) bool.
    """
    inside = np.zeros(len(xy), dtype=bool)
    x, y = xy[:, 0:1], xy[:, 1:2]  # (P, 1) against (1, V) edges
    for polygon in polygons:
        v = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(v) < 3:
            continue
        x0, y0 = v[None, :, 0], v[None, :, 1]
        x1, y1 = np.roll(v[:, 0], -1)[None], np.roll(v[:, 1], -1)[None]
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at_y = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside |= (crosses & (x < x_at_y)).sum(axis=1) % 2 == 1
    return inside
