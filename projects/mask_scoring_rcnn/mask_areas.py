"""How much of a ground-truth mask lies inside a box, in image pixels, for BitMasks and PolygonMasks.

The MaskIoU target needs the gt area of the *whole* instance in the RoI's M x M grid, but the grid
only sees the part inside the proposal. The ratio (gt area inside the box) / (gt area) converts one
into the other; both areas are measured here in the same units as the masks' own ``area()``
(pixel counts for BitMasks, the shoelace area for polygons), so a gt lying wholly inside its box
gets a ratio of exactly 1.
"""

from __future__ import annotations

import numpy as np
import torch

from framework.structures import BitMasks, PolygonMasks

__all__ = ["clip_polygon_to_box", "mask_area_in_boxes", "polygon_area"]


def mask_area_in_boxes(masks: BitMasks | PolygonMasks, boxes: torch.Tensor) -> torch.Tensor:
    """Area of mask i inside ``boxes[i]``.

    Args:
        masks: N masks of one or several images (one per box, e.g. each proposal's matched gt).
        boxes: (N, 4) XYXY in image pixels.
    Returns:
        (N,) float32 on ``boxes.device``. A BitMasks pixel is the unit square [x, x+1) x [y, y+1),
        so a box edge through a pixel counts the covered fraction of it.
    """
    if len(masks) != len(boxes):
        raise ValueError(f"mask_area_in_boxes got {len(boxes)} boxes for {len(masks)} masks")
    boxes_cpu = boxes.detach().to("cpu", torch.float64)  # integer crop bounds: one transfer for all boxes
    if isinstance(masks, BitMasks):
        if len(masks) == 0:
            return torch.zeros(0, dtype=torch.float32, device=boxes.device)
        areas = torch.stack([_bitmask_area_in_box(m, b.tolist()) for m, b in zip(masks.tensor, boxes_cpu)])
        return areas.to(device=boxes.device, dtype=torch.float32)
    if isinstance(masks, PolygonMasks):
        areas = [
            sum(polygon_area(clip_polygon_to_box(p, b.numpy())) for p in polygons)
            for polygons, b in zip(masks.polygons, boxes_cpu)
        ]
        return torch.tensor(areas, dtype=torch.float32, device=boxes.device)
    raise TypeError(f"mask_area_in_boxes: gt_masks must be BitMasks or PolygonMasks, got {type(masks).__name__}")


def _bitmask_area_in_box(mask: torch.Tensor, box: list[float]) -> torch.Tensor:
    """(H, W) bool mask, box [x0, y0, x1, y1] -> 0-d covered area on the mask's device, with
    fractional weights for the border pixels."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    x0, x1 = min(max(x0, 0.0), w), min(max(x1, 0.0), w)
    y0, y1 = min(max(y0, 0.0), h), min(max(y1, 0.0), h)
    if x1 <= x0 or y1 <= y0:
        return mask.new_zeros((), dtype=torch.float32)
    c0, c1 = int(np.floor(x0)), int(np.ceil(x1))
    r0, r1 = int(np.floor(y0)), int(np.ceil(y1))
    crop = mask[r0:r1, c0:c1].to(torch.float32)
    wx = _coverage(c0, c1, x0, x1, mask.device)
    wy = _coverage(r0, r1, y0, y1, mask.device)
    return wy @ crop @ wx


def _coverage(first: int, stop: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    """Fraction of each unit cell [k, k+1), k in [first, stop), that lies in [lo, hi]."""
    k = torch.arange(first, stop, dtype=torch.float32, device=device)
    return ((k + 1).clamp(max=hi) - k.clamp(min=lo)).clamp(0, 1)


def clip_polygon_to_box(polygon: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clipping of one polygon to an axis-aligned box.

    A non-convex polygon may come out with zero-width "bridges" along the box edges; they add no
    area, so :func:`polygon_area` of the result is the exact area inside the box.

    Args:
        polygon: flat [x0, y0, x1, y1, ...] (P >= 3 points).
        box: (4,) x0, y0, x1, y1.
    Returns:
        flat array of the clipped polygon (possibly empty).
    """
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    for axis, bound, keep_above in ((0, box[0], True), (0, box[2], False), (1, box[1], True), (1, box[3], False)):
        if len(xy) == 0:
            break
        xy = _clip_half_plane(xy, axis, float(bound), keep_above)
    return xy.reshape(-1)


def _clip_half_plane(xy: np.ndarray, axis: int, bound: float, keep_above: bool) -> np.ndarray:
    """(P, 2) -> (Q, 2): keep the side ``xy[:, axis] >= bound`` (or ``<=``), cutting the edges that cross it."""
    v = xy[:, axis]
    inside = v >= bound if keep_above else v <= bound
    prev, prev_inside = np.roll(xy, 1, axis=0), np.roll(inside, 1)
    crossing = inside != prev_inside
    denom = v - prev[:, axis]
    t = (bound - prev[:, axis]) / np.where(crossing, denom, 1.0)
    cut = prev + t[:, None] * (xy - prev)
    # Per vertex, in order: the crossing point of the edge arriving at it, then the vertex itself.
    points = np.stack([cut, xy], axis=1).reshape(-1, 2)
    keep = np.stack([crossing, inside], axis=1).reshape(-1)
    return points[keep]


def polygon_area(polygon: np.ndarray) -> float:
    """Shoelace area of a flat [x0, y0, ...] polygon (0 for fewer than 3 points), as PolygonMasks.area()."""
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 3:
        return 0.0
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
