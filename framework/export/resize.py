"""The test-time resize of :class:`framework.data.mapper.DatasetMapper`, as graph operations.

An exported model takes the image at its own size, so the mapper's resize has to happen inside the
graph, for any input size. Two rules, as the mapper's resize component
(``input.test.augmentations``: ``ResizeShortestEdge`` or ``ResizeShortestEdgeTorchvision``):

* ``"detectron2"``: the output size of :func:`framework.data.augmentations.resize_shortest_edge_shape`
  (float64, sides rounded half up) and PIL's bilinear resampling of the uint8 image. PIL's
  resampler is reproduced to the bit: per output pixel a triangle filter widened by the
  downscaling factor, normalised, turned into 22-bit fixed-point weights, a horizontal then a
  vertical pass, each rounded and clipped to uint8. The weights are a dense (out, in) matrix per
  axis and each pass a float64 matrix product, exact because every product and partial sum is an
  integer below 2**53 (tests/export/test_resize.py compares with PIL on many sizes).
* ``"torchvision"``: sides floored, float bilinear interpolation without antialiasing, as
  :func:`framework.layers.resize.resize_shortest_edge_torchvision`.

The output sizes are data (they depend on the input's size through float arithmetic), so they are
computed as tensors and turned into sizes with ``.item()``: torch.export sees them as unbacked
symbolic sizes, bounded with ``torch._check`` so that the layers after them can be traced.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_shape", "pil_bilinear_weights", "resize_image"]

#: PIL's fixed-point precision for 8-bit images (``PRECISION_BITS`` in Resample.c: 32 - 8 - 2).
PRECISION_BITS = 22


def _size_tensor(size) -> Tensor:
    """A 0-d float64 tensor holding ``size`` (an int or a symbolic size of the traced input)."""
    return torch.scalar_tensor(size, dtype=torch.float64)


def _div(number: float, tensor: Tensor) -> Tensor:
    """``number / tensor`` rounded once, as Python divides floats (see :func:`resize_shape`)."""
    return torch.full_like(tensor, float(number)) / tensor


def resize_shape(height: Tensor, width: Tensor, *, short_edge: int, max_size: int,
                 style: Literal["detectron2", "torchvision"] = "detectron2") -> tuple[Tensor, Tensor]:
    """Output (new_h, new_w) of the test-time resize of an image of (height, width), as 0-d int64.

    ``"detectron2"`` mirrors :func:`framework.data.augmentations.resize_shortest_edge_shape` operation for
    operation in float64 (so the +0.5 rounding agrees); ``"torchvision"`` mirrors
    :func:`framework.layers.resize.resize_shortest_edge_torchvision` (``floor(side * scale)``).

    Args:
        height, width: 0-d float64 tensors, the input's size.
        short_edge, max_size: the resize's one ``short_edge_length`` and ``max_size``; ``short_edge == 0``: no resize.
    """
    if short_edge == 0:
        return height.to(torch.int64), width.to(torch.int64)
    size = float(short_edge)
    # A number over a tensor (``size / t``) is computed by torch as ``size * (1 / t)``, which can be
    # one ulp off Python's division and then floors or rounds to another side length (389 px to
    # short edge 224: 223 instead of 224); a tensor over a tensor is IEEE division, as Python's.
    if style == "torchvision":
        scale = torch.minimum(_div(size, torch.minimum(height, width)), _div(max_size, torch.maximum(height, width)))
        return torch.floor(height * scale).to(torch.int64), torch.floor(width * scale).to(torch.int64)
    scale = _div(size, torch.minimum(height, width))
    portrait = height < width
    new_h = torch.where(portrait, torch.full_like(height, size), scale * height)
    new_w = torch.where(portrait, scale * width, torch.full_like(width, size))
    longest = torch.maximum(new_h, new_w)
    cap = _div(max_size, longest)
    too_big = longest > max_size
    new_h = torch.where(too_big, new_h * cap, new_h)
    new_w = torch.where(too_big, new_w * cap, new_w)
    return torch.floor(new_h + 0.5).to(torch.int64), torch.floor(new_w + 0.5).to(torch.int64)


def pil_bilinear_weights(in_size, out_size, out_size_f: Tensor, in_size_f: Tensor) -> Tensor:
    """PIL's fixed-point bilinear weights for resizing one axis from ``in_size`` to ``out_size`` pixels.

    ``precompute_coeffs`` and ``normalize_coeffs_8bpc`` of Pillow's Resample.c, for the whole
    axis at once: output pixel i has centre ``(i + 0.5) * scale`` in input pixels, the triangle
    filter is widened by ``max(scale, 1)``, taps are limited to ``[xmin, xmax)``, normalised to sum
    1 and rounded to multiples of 2**-22.

    Args:
        in_size, out_size: the sizes (ints or symbolic sizes); in_size_f, out_size_f: the same as
            0-d float64 tensors.
    Returns:
        (out_size, in_size) float64 matrix of integer weights (the 22-bit fixed-point values).
    """
    scale = in_size_f / out_size_f
    filterscale = torch.clamp(scale, min=1.0)
    support = filterscale * 1.0  # the bilinear filter's support is 1
    center = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale  # (out,)
    xmin = torch.clamp(torch.floor(center - support + 0.5), min=0.0)
    xmax = torch.minimum(torch.floor(center + support + 0.5), in_size_f)
    j = torch.arange(in_size, dtype=torch.float64)  # (in,)
    t = ((j[None, :] - center[:, None]) + 0.5) * (1.0 / filterscale)
    w = torch.clamp(1.0 - t.abs(), min=0.0)
    w = torch.where((j[None, :] >= xmin[:, None]) & (j[None, :] < xmax[:, None]), w, torch.zeros_like(w))
    total = w.sum(dim=1, keepdim=True)
    w = torch.where(total != 0, w / torch.where(total != 0, total, torch.ones_like(total)), w)
    return torch.floor(w * float(1 << PRECISION_BITS) + 0.5)


def _fixed_point_round(acc: Tensor) -> Tensor:
    """PIL's ``clip8``: (acc + 2**21) >> 22, clipped to [0, 255] (acc holds integers, float64)."""
    return torch.clamp(torch.floor((acc + float(1 << (PRECISION_BITS - 1))) / float(1 << PRECISION_BITS)), 0.0, 255.0)


def resize_image(image: Tensor, new_h, new_w, new_h_f: Tensor, new_w_f: Tensor, *,
                 style: Literal["detectron2", "torchvision"] = "detectron2") -> Tensor:
    """Resize an (H, W, 3) uint8 image to (3, new_h, new_w) float32, as the mapper's resize component.

    ``"detectron2"``: PIL's bilinear resize, bit for bit (integer values 0..255); ``"torchvision"``:
    float bilinear interpolation of the float image (no rounding).

    Args:
        new_h, new_w: the output size (ints or symbolic sizes); new_h_f, new_w_f: the same as 0-d float64.
    """
    chw = image.permute(2, 0, 1)
    height, width = image.shape[0], image.shape[1]
    if style == "torchvision":
        return F.interpolate(chw[None].to(torch.float32), size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    x = chw.to(torch.float64)  # (3, H, W)
    wx = pil_bilinear_weights(width, new_w, new_w_f, _size_tensor(width))    # (new_w, W)
    wy = pil_bilinear_weights(height, new_h, new_h_f, _size_tensor(height))  # (new_h, H)
    x = _fixed_point_round(torch.matmul(x, wx.t()))        # horizontal pass: (3, H, new_w)
    x = _fixed_point_round(torch.matmul(wy[None], x))      # vertical pass: (3, new_h, new_w)
    return x.to(torch.float32)
