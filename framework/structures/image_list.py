"""ImageList: images of different sizes padded into one batch tensor, remembering each true size."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ImageList"]


def _as_size(value) -> int | torch.SymInt:
    return value if isinstance(value, torch.SymInt) else int(value)


class ImageList:
    """A padded batch of images plus the size of each image before padding.

    Attributes:
        tensor: (N, C, H, W) (or (N, H, W) for 2-d inputs); image i occupies the top-left
            ``image_sizes[i]`` corner, the rest is padding.
        image_sizes: per image (height, width) before padding.
    """

    def __init__(self, tensor: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> None:
        if len(image_sizes) != tensor.shape[0]:
            raise ValueError(f"ImageList: {len(image_sizes)} image sizes for a batch of {tensor.shape[0]} images")
        self.tensor = tensor
        # a symbolic size (torch.export) stays symbolic: int() would freeze it to the example's value
        self.image_sizes = [(_as_size(h), _as_size(w)) for h, w in image_sizes]

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> torch.Tensor:
        """Image ``idx`` without its padding: (C, h_idx, w_idx)."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    def __repr__(self) -> str:
        return f"ImageList(tensor={tuple(self.tensor.shape)}, image_sizes={self.image_sizes})"

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor], size_divisibility: int = 0, pad_value: float = 0.0
    ) -> "ImageList":
        """Pad images at the bottom and right into one batch.

        Args:
            tensors: N tensors (C, H_i, W_i) (or (H_i, W_i)) with the same leading dims, dtype and device.
            size_divisibility: if > 1, the padded H and W are rounded up to a multiple of it (the
                backbone's largest stride, e.g. 32 for FPN) so every feature level divides evenly.
            pad_value: value written into the padding.

        Returns:
            ImageList with ``tensor`` (N, C, H, W), H = max H_i rounded up, W likewise.
        """
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors needs at least one image tensor")
        leading = tensors[0].shape[:-2]
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor) or t.dim() < 2:
                raise ValueError(f"ImageList.from_tensors: item {i} is not a (C, H, W) tensor: {type(t).__name__}")
            if t.shape[:-2] != leading:
                raise ValueError(
                    f"ImageList.from_tensors: item {i} has shape {tuple(t.shape)}, "
                    f"but item 0 has leading dims {tuple(leading)}"
                )
        image_sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if size_divisibility > 1:
            s = size_divisibility
            max_h = (max_h + s - 1) // s * s
            max_w = (max_w + s - 1) // s * s

        if len(tensors) == 1:
            # One image: pad it, rather than copy it into a slice of a new batch, so that an
            # exported graph (torch.export, ONNX) with symbolic sizes needs no in-place slice write.
            img = tensors[0]
            padded = F.pad(img, (0, max_w - img.shape[-1], 0, max_h - img.shape[-2]), value=pad_value)
            return ImageList(padded[None].contiguous(), image_sizes)
        batch = tensors[0].new_full((len(tensors), *leading, max_h, max_w), pad_value)
        for img, slot in zip(tensors, batch):
            slot[..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batch.contiguous(), image_sizes)
