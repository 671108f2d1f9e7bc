"""Boxes: an (N, 4) float tensor of XYXY absolute pixel coordinates, with the usual box algebra."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torchvision.ops import box_area, box_iou

from framework.structures.size_checks import known_true

__all__ = ["Boxes", "pairwise_iou"]


class Boxes:
    """A list of N axis-aligned boxes stored as ``tensor``: (N, 4) float32, (x0, y0, x1, y1) in pixels.

    Indexing (int, slice, bool mask, index tensor) returns a new ``Boxes`` that may share storage.
    """

    def __init__(self, tensor: torch.Tensor | Sequence) -> None:
        """
        Args:
            tensor: (N, 4) XYXY boxes, a tensor (any float or int dtype, kept on its device) or a
                nested sequence of numbers; an empty one of any shape gives N = 0.
        """
        device = tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")
        try:
            tensor = torch.as_tensor(tensor, dtype=torch.float32, device=device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"Boxes(tensor): expected an (N, 4) tensor or nested sequence of numbers, got "
                f"{type(tensor).__name__} that torch cannot convert: {e}"
            ) from None
        # a symbolic count of boxes (torch.export) is not known to be 0, and needs no reshape
        if known_true(tensor.numel() == 0):
            tensor = tensor.reshape(-1, 4)
        if tensor.dim() != 2 or tensor.size(-1) != 4:
            raise ValueError(
                f"Boxes(tensor): expected an (N, 4) tensor of XYXY boxes (or an empty one), got shape "
                f"{tuple(tensor.shape)}"
            )
        self.tensor = tensor

    # -- container protocol ------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item) -> "Boxes":
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        b = self.tensor[item]
        if b.dim() != 2:
            raise IndexError(
                f"Boxes[{item!r}] on {len(self)} boxes gave a tensor of shape {tuple(b.shape)}, not rows of "
                f"boxes: index with an int, a slice, an (N,) bool mask or a 1-d index tensor (use "
                f"boxes.tensor[...] for single coordinates)"
            )
        return Boxes(b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "Boxes":
        return Boxes(self.tensor.to(*args, **kwargs))

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    @classmethod
    def cat(cls, boxes_list: Sequence["Boxes"]) -> "Boxes":
        """Concatenate a list of Boxes into one (N1 + N2 + ..., 4)."""
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))

    # -- geometry ------------------------------------------------------------------------------
    def area(self) -> torch.Tensor:
        """(N,) areas; a box with x1 < x0 or y1 < y0 has a negative side, as in torchvision."""
        return box_area(self.tensor)

    def centers(self) -> torch.Tensor:
        """(N, 2) box centres (x, y)."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def widths(self) -> torch.Tensor:
        return self.tensor[:, 2] - self.tensor[:, 0]

    def heights(self) -> torch.Tensor:
        return self.tensor[:, 3] - self.tensor[:, 1]

    def clip(self, image_size: tuple[int, int]) -> None:
        """Clip in place to an image of ``(height, width)``: x into [0, w], y into [0, h].

        Raises:
            FloatingPointError: a box has a NaN or infinite coordinate (clamping would hide it).
        """
        finite = torch.isfinite(self.tensor).all(dim=1)
        # An exported graph cannot raise on values; its callers drop non-finite boxes before clipping.
        if not torch.compiler.is_exporting() and not bool(finite.all()):
            rows = torch.nonzero(~finite)[:, 0].tolist()
            shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
            raise FloatingPointError(
                f"Boxes.clip: {len(rows)} of {len(self)} boxes have NaN or infinite coordinates (rows {shown}; "
                f"row {rows[0]} is {self.tensor[rows[0]].tolist()}); clip needs finite boxes, drop or fix them first"
            )
        h, w = image_size
        x0 = self.tensor[:, 0].clamp(min=0, max=w)
        y0 = self.tensor[:, 1].clamp(min=0, max=h)
        x1 = self.tensor[:, 2].clamp(min=0, max=w)
        y1 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x0, y0, x1, y1), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        """(N,) bool: both sides strictly longer than ``threshold``."""
        return (self.widths() > threshold) & (self.heights() > threshold)

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: int = 0) -> torch.Tensor:
        """(N,) bool: box lies within ``(height, width)`` up to ``boundary_threshold`` pixels outside."""
        h, w = box_size
        t = boundary_threshold
        b = self.tensor
        return (b[:, 0] >= -t) & (b[:, 1] >= -t) & (b[:, 2] < w + t) & (b[:, 3] < h + t)

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale coordinates in place (after resizing the image by these factors)."""
        self.tensor = self.tensor * self.tensor.new_tensor([scale_x, scale_y, scale_x, scale_y])


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> torch.Tensor:
    """(N, M) IoU between every box of ``boxes1`` (N) and of ``boxes2`` (M)."""
    return box_iou(boxes1.tensor, boxes2.tensor)
