"""Per-instance segmentation masks for one image: ``BitMasks`` (dense) and ``PolygonMasks`` (COCO polygons).

Both offer ``crop_and_resize(boxes, mask_size)``, which turns each ground-truth mask into the
``mask_size x mask_size`` target of the Mask R-CNN mask head for its matched proposal box.
The sampling follows detectron2's (the same operations, in the same order), so training targets
should be detectron2's; detectron2 is not a dependency, so no test compares with it:
tests/structures/test_masks.py checks hand-computed crops.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import roi_align

from framework.structures.boxes import Boxes

__all__ = ["BitMasks", "PolygonMasks", "polygons_to_bitmask", "rasterize_polygons_within_box"]

# A polygon as stored: a flat float64 array [x0, y0, x1, y1, ...] in absolute pixel coordinates.
Polygon = np.ndarray
IndexLike = Union[int, slice, Sequence[int], torch.Tensor, np.ndarray]


def polygons_to_bitmask(polygons: Sequence[Polygon], height: int, width: int) -> np.ndarray:
    """Rasterise the polygons of ONE instance with the COCO API.

    Args:
        polygons: flat arrays [x0, y0, x1, y1, ...] (>= 3 points each), all belonging to one instance;
            their union is rasterised. An empty list gives an empty mask.
        height, width: size of the output mask.

    Returns:
        (height, width) bool ndarray.
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    # frPyObjects reads a list whose first element has 4 numbers as bounding boxes, so pass
    # plain float64 arrays (we guarantee >= 6 numbers per polygon at construction).
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def rasterize_polygons_within_box(polygons: Sequence[Polygon], box: np.ndarray, mask_size: int) -> torch.Tensor:
    """Rasterise one instance's polygons inside ``box`` onto a ``mask_size x mask_size`` grid.

    The polygons are shifted so the box's top-left corner is the origin, scaled so the box spans
    ``mask_size`` pixels on each side (a degenerate side is treated as 0.1 px), and rasterised with
    the COCO API, as detectron2's function of the same name does.

    Args:
        polygons: flat float64 arrays of one instance (not modified).
        box: (4,) array x0, y0, x1, y1.
        mask_size: M.

    Returns:
        (M, M) bool tensor.
    """
    width, height = box[2] - box[0], box[3] - box[1]
    scale_x = mask_size / max(width, 0.1)
    scale_y = mask_size / max(height, 0.1)
    moved = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)  # a copy: the stored polygons must stay untouched
        q[0::2] = (q[0::2] - box[0]) * scale_x
        q[1::2] = (q[1::2] - box[1]) * scale_y
        moved.append(q)
    return torch.from_numpy(polygons_to_bitmask(moved, mask_size, mask_size))


def _polygon_area(polygon: Polygon) -> float:
    """Exact area of one simple polygon by the shoelace formula (as detectron2; not a pixel count)."""
    x, y = polygon[0::2], polygon[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _index_to_list(item: IndexLike, length: int) -> list[int]:
    """Turn an int / slice / bool mask / index sequence over ``length`` items into a list of ints."""
    if isinstance(item, (int, np.integer)):
        if not -length <= int(item) < length:
            raise IndexError(f"index {int(item)} is out of range for {length} instances")
        return [int(item) % length]
    if isinstance(item, slice):
        return list(range(length))[item]
    if isinstance(item, (torch.Tensor, np.ndarray)):
        item = torch.as_tensor(item).cpu()
        if item.dtype == torch.bool:
            if item.dim() != 1 or item.numel() != length:
                raise IndexError(f"a bool index must have shape ({length},), got {tuple(item.shape)}")
            return item.nonzero().squeeze(1).tolist()
        if item.dtype.is_floating_point or item.dtype.is_complex:
            raise IndexError(f"cannot index instances with a tensor of dtype {item.dtype}; use int64 or bool")
        return item.reshape(-1).tolist()
    if isinstance(item, (list, tuple)):
        if len(item) > 0 and all(isinstance(i, (bool, np.bool_)) for i in item):
            return _index_to_list(torch.tensor(item, dtype=torch.bool), length)
        return [int(i) for i in item]
    raise IndexError(f"unsupported index {item!r}: use an int, slice, bool mask or index list/tensor")


class BitMasks:
    """N dense instance masks of one image, ``tensor``: (N, H, W) bool.

    Indexing returns a *view*: the source masks and an index, with ``tensor`` gathered only when
    read. Matching gives every sampled proposal its gt mask (512 proposals of an image, 8 gt
    masks); a view keeps 8 masks, and :meth:`crop_and_resize` reads each proposal's mask through the
    index instead of copying one full-image mask per proposal (what torchvision does too).
    """

    def __init__(self, tensor: torch.Tensor | np.ndarray) -> None:
        device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
        tensor = torch.as_tensor(tensor, dtype=torch.bool, device=device)
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks expects an (N, H, W) tensor, got shape {tuple(tensor.shape)}")
        self._source = tensor
        self._index: torch.Tensor | None = None  # (N,) int64 into _source; None: all of it, in order
        self._tensor: torch.Tensor | None = tensor
        self.image_size = tuple(tensor.shape[1:])

    @classmethod
    def _view(cls, source: torch.Tensor, index: torch.Tensor) -> "BitMasks":
        masks = cls.__new__(cls)
        masks._source, masks._index, masks._tensor = source, index, None
        masks.image_size = tuple(source.shape[1:])
        return masks

    @property
    def tensor(self) -> torch.Tensor:
        """(N, H, W) bool (gathered from the source masks on first read of a view)."""
        if self._tensor is None:
            self._tensor = self._source[self._index]
        return self._tensor

    # -- container protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return self._source.shape[0] if self._index is None else self._index.shape[0]

    def __getitem__(self, item: IndexLike) -> "BitMasks":
        """Index instances (int, slice, bool mask, index tensor): a view of the same source masks."""
        if isinstance(item, (int, np.integer)):
            item = [int(item) % len(self)] if -len(self) <= int(item) < len(self) else [int(item)]
        positions = torch.arange(len(self), device=self._source.device)
        try:
            if isinstance(item, (list, tuple, np.ndarray)):
                item = torch.as_tensor(item, device=self._source.device)
                item = item.long() if item.numel() == 0 else item
            picked = positions[item]
        except (IndexError, RuntimeError, TypeError) as e:
            raise IndexError(f"cannot index {len(self)} BitMasks with {item!r}: {e}") from None
        if picked.dim() != 1:
            raise IndexError(f"indexing BitMasks with {item!r} gave shape {tuple(picked.shape)} of indices, not (N,)")
        index = picked if self._index is None else self._index[picked]
        return BitMasks._view(self._source, index)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self)}, image_size={self.image_size})"

    @property
    def device(self) -> torch.device:
        return self._source.device

    def to(self, *args, **kwargs) -> "BitMasks":
        if self._index is None:
            return BitMasks(self._source.to(*args, **kwargs))
        source = self._source.to(*args, **kwargs)
        return BitMasks._view(source, self._index.to(source.device))

    @classmethod
    def cat(cls, masks_list: Sequence["BitMasks"]) -> "BitMasks":
        """Concatenate BitMasks of the same image size into one (N1 + N2 + ..., H, W)."""
        if len(masks_list) == 0:
            raise ValueError("BitMasks.cat needs at least one BitMasks")
        bad = [type(m).__name__ for m in masks_list if not isinstance(m, BitMasks)]
        if bad:
            raise TypeError(f"BitMasks.cat got non-BitMasks items: {bad}")
        return cls(torch.cat([m.tensor for m in masks_list], dim=0))

    # -- geometry ------------------------------------------------------------------------------
    def area(self) -> torch.Tensor:
        """(N,) number of foreground pixels of each mask (int64)."""
        return self.tensor.sum(dim=(1, 2))

    def nonempty(self) -> torch.Tensor:
        """(N,) bool: the mask has at least one foreground pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self) -> Boxes:
        """Tight boxes (N, 4) around the foreground pixels; a pixel (x, y) spans [x, x+1).

        An empty mask gets the box (0, 0, 0, 0).
        """
        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        cols_any = self.tensor.any(dim=1).cpu()  # (N, W)
        rows_any = self.tensor.any(dim=2).cpu()  # (N, H)
        for i in range(len(self)):
            xs = torch.where(cols_any[i])[0]
            ys = torch.where(rows_any[i])[0]
            if len(xs) > 0 and len(ys) > 0:
                boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
        return Boxes(boxes.to(self.device))

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Crop mask i to ``boxes[i]`` and resample it to (M, M): the Mask R-CNN training target.

        Bilinear RoIAlign (aligned=True, adaptive sampling) of the float mask, thresholded at 0.5,
        as detectron2 computes it.

        Args:
            boxes: (N, 4) XYXY boxes in image pixels, one per mask.
            mask_size: M.

        Returns:
            (N, M, M) float32 tensor of 0.0 / 1.0, on the masks' device.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} masks")
        device = self.device
        boxes = boxes.to(device=device, dtype=torch.float32)
        # roi_align needs each box to name its source "image". A view with more boxes than source
        # masks (proposals matched to gt) reads source mask index[i] for box i, so only the source
        # masks are converted to float; otherwise mask i is "image" i.
        if self._index is not None and len(self._index) > len(self._source):
            source, batch_index = self._source, self._index
        else:
            source, batch_index = self.tensor, torch.arange(len(boxes), device=device)
        rois = torch.cat([batch_index.to(torch.float32)[:, None], boxes], dim=1)
        sampled = roi_align(
            source[:, None].float(),
            rois,
            (mask_size, mask_size),
            spatial_scale=1.0,
            sampling_ratio=0,  # adaptive: ceil(box side / M) samples per bin side
            aligned=True,
        ).squeeze(1)
        return (sampled >= 0.5).float()

    @staticmethod
    def from_polygon_masks(
        polygon_masks: "PolygonMasks | Sequence[Sequence[Polygon]]", height: int, width: int
    ) -> "BitMasks":
        """Rasterise polygons (a PolygonMasks or list of per-instance polygon lists) to (N, height, width)."""
        if isinstance(polygon_masks, PolygonMasks):
            polygon_masks = polygon_masks.polygons
        masks = [polygons_to_bitmask(p, height, width) for p in polygon_masks]
        if len(masks) == 0:
            return BitMasks(torch.zeros(0, height, width, dtype=torch.bool))
        return BitMasks(torch.from_numpy(np.stack(masks)))


class PolygonMasks:
    """N instance masks of one image as COCO polygons.

    ``polygons[i]`` is the list of polygons of instance i (several when it is split by occlusion),
    each a flat float64 ndarray [x0, y0, x1, y1, ...] in image pixels with at least 3 points.
    Polygons always stay on the CPU; ``to()`` is a no-op kept for a uniform API.
    """

    def __init__(self, polygons: Sequence[Sequence[Polygon | Sequence[float] | torch.Tensor]]) -> None:
        if not isinstance(polygons, (list, tuple)):
            raise TypeError(
                "PolygonMasks expects a list (one entry per instance) of lists of polygons, "
                f"got {type(polygons).__name__}"
            )
        self.polygons: list[list[np.ndarray]] = [
            self._check_instance(i, per_instance) for i, per_instance in enumerate(polygons)
        ]

    @staticmethod
    def _check_instance(index: int, per_instance) -> list[np.ndarray]:
        if not isinstance(per_instance, (list, tuple)):
            raise ValueError(
                f"PolygonMasks: instance {index} must be a list of polygons, got {type(per_instance).__name__}"
            )
        out = []
        for j, p in enumerate(per_instance):
            if isinstance(p, torch.Tensor):
                p = p.detach().cpu().numpy()
            arr = np.asarray(p, dtype=np.float64).reshape(-1)
            if arr.size % 2 != 0 or arr.size < 6:
                raise ValueError(
                    f"PolygonMasks: polygon {j} of instance {index} has {arr.size} coordinates; a polygon is a flat "
                    "[x0, y0, x1, y1, ...] list with an even number (>= 6, i.e. >= 3 points) of values"
                )
            out.append(arr)
        return out

    # -- container protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, item: IndexLike) -> "PolygonMasks":
        """Select instances by int, slice, bool mask, or index list / tensor. Shares the polygon arrays."""
        return PolygonMasks([self.polygons[i] for i in _index_to_list(item, len(self))])

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        return iter(self.polygons)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self)})"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> "PolygonMasks":
        return self

    @classmethod
    def cat(cls, masks_list: Sequence["PolygonMasks"]) -> "PolygonMasks":
        """Concatenate PolygonMasks into one holding all their instances in order."""
        if len(masks_list) == 0:
            raise ValueError("PolygonMasks.cat needs at least one PolygonMasks")
        bad = [type(m).__name__ for m in masks_list if not isinstance(m, PolygonMasks)]
        if bad:
            raise TypeError(f"PolygonMasks.cat got non-PolygonMasks items: {bad}")
        return cls(list(itertools.chain.from_iterable(m.polygons for m in masks_list)))

    # -- geometry ------------------------------------------------------------------------------
    def area(self) -> torch.Tensor:
        """(N,) float64 polygon areas (shoelace formula, summed over an instance's polygons, as detectron2)."""
        return torch.tensor([sum(_polygon_area(p) for p in per) for per in self.polygons], dtype=torch.float64)

    def nonempty(self) -> torch.Tensor:
        """(N,) bool: the instance has at least one polygon."""
        return torch.tensor([len(per) > 0 for per in self.polygons], dtype=torch.bool)

    def get_bounding_boxes(self) -> Boxes:
        """Tight (N, 4) boxes around each instance's polygon vertices; an instance without polygons gets zeros."""
        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        for i, per in enumerate(self.polygons):
            if not per:
                continue
            xy = np.concatenate(per).reshape(-1, 2)
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            boxes[i] = torch.tensor([lo[0], lo[1], hi[0], hi[1]], dtype=torch.float32)
        return Boxes(boxes)

    def crop_and_resize(self, boxes: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Rasterise instance i inside ``boxes[i]`` at (M, M): the Mask R-CNN training target.

        Args:
            boxes: (N, 4) XYXY boxes in image pixels, one per instance.
            mask_size: M.

        Returns:
            (N, M, M) float32 tensor of 0.0 / 1.0, on ``boxes.device``.
        """
        if len(boxes) != len(self):
            raise ValueError(f"crop_and_resize got {len(boxes)} boxes for {len(self)} polygon masks")
        device = boxes.device
        # Rasterisation runs on the CPU in numpy; the box is float32 there, as in detectron2.
        boxes_np = boxes.detach().to("cpu", torch.float32).numpy()
        if len(self) == 0:
            return torch.zeros(0, mask_size, mask_size, dtype=torch.float32, device=device)
        masks = [rasterize_polygons_within_box(p, b, mask_size) for p, b in zip(self.polygons, boxes_np)]
        return torch.stack(masks).to(device=device, dtype=torch.float32)

    # -- in-place transforms (for data augmentation) -----------------------------------------
    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale all coordinates (after resizing the image by these factors).

        New arrays replace the old ones, so polygons shared with an indexed copy or with the
        caller's input are never modified.
        """
        factors = np.array([scale_x, scale_y], dtype=np.float64)
        self.polygons = [[(p.reshape(-1, 2) * factors).reshape(-1) for p in per] for per in self.polygons]

    def flip_horizontal(self, image_width: float) -> None:
        """Mirror all polygons for a horizontally flipped image: x -> image_width - x (new arrays, as ``scale``)."""
        flipped = []
        for per in self.polygons:
            new = []
            for p in per:
                q = p.copy()
                q[0::2] = image_width - q[0::2]
                new.append(q)
            flipped.append(new)
        self.polygons = flipped
