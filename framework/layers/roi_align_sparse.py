"""RoIAlign's backward on a CPU as one sparse-dense matrix product.

RoIAlign is linear in its input: every output bin is a weighted sum of input pixels (bilinear
weights, averaged over the bin's sampling points). Its backward scatters each bin's gradient back
to those pixels with the same weights. torchvision's CPU kernel recomputes the weights of every
sampling point once per *channel* and scatters one float at a time on one thread; for Mask R-CNN
training on a CPU that is a large share of the step (a fifth of the default job's).

Here the weights are computed once per (RoI, bin, sampling point), vectorised, as a sparse matrix
``M`` of shape (N*H*W, K*out_h*out_w) in CSR form (its rows, the input pixels, sorted), and the
input's gradient is ``M @ grad_output`` with the channels as the dense columns: MKL's sparse
product, vectorised along the channels and spread over the threads. The sampling rule is
torchvision's (``roi_align_kernel.cpp``) to the letter: the same sampling points in float32, the
same clamping at the borders, points more than one pixel outside the map contribute nothing,
``sampling_ratio <= 0`` samples ``ceil(bin size)`` points per bin side. Only the summation order
differs, so the gradient matches torchvision's to float rounding
(tests/layers/test_roi_align_sparse.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["roi_align_backward", "sampling_matrix"]


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts (K,) int32: the owner k (int64) and the position 0..counts[k]-1 (int32) of each of
    the sum(counts) items, owner after owner."""
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    first = (torch.cumsum(counts, 0, dtype=torch.int32) - counts).index_select(0, owner)
    return owner, torch.arange(len(owner), dtype=torch.int32) - first


def _axis_terms(start: Tensor, size: Tensor, grid: Tensor, bins: int, limit: int, dtype: torch.dtype):
    """The sampling points of every RoI along one axis: their two neighbouring pixels and weights.

    Along one axis RoI k has ``bins * grid[k]`` points, ordered (bin, point), laid out flat RoI
    after RoI.

    Args:
        start, size: (K,) the RoIs' start and extent on this axis, in feature-map pixels.
        grid: (K,) int32 sampling points per bin on this axis (>= 0).
        bins: output bins on this axis.
        limit: the feature map's size on this axis.

    Returns:
        bin, low, high: (P,) int32 bin of each point and its neighbouring pixels;
        w_low, w_high: (P,) their weights, 0 for a point outside [-1, limit].
    """
    roi, local = _ragged_arange(grid * bins)
    g = grid.index_select(0, roi)
    bin_ = torch.div(local, g, rounding_mode="floor")
    point = local - bin_ * g
    bin_size = (size / bins).index_select(0, roi)
    # torchvision: start + bin * bin_size + (point + .5) * bin_size / grid, left to right, in float32
    pos = start.index_select(0, roi) + bin_.to(dtype) * bin_size + (point.to(dtype) + 0.5) * bin_size / g.to(dtype)
    inside = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(min=0)
    low = pos.to(torch.int32)  # truncation = floor for pos >= 0
    edge = low >= limit - 1
    low = low.clamp(max=limit - 1)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low.to(dtype))
    keep = inside.to(dtype)
    return roi, bin_, low, high, (1 - frac) * keep, frac * keep


def sampling_matrix(
    rois: Tensor, spatial_scale: float, output_size: tuple[int, int], input_shape: tuple[int, int, int, int],
    sampling_ratio: int, aligned: bool,
) -> Tensor:
    """The RoIAlign weights as a sparse matrix: ``roi_align(x)`` flattened = ``M.T @ x`` flattened.

    Args:
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)`` in input-image coordinates, float32 or float64.
        spatial_scale, sampling_ratio, aligned: as in ``torchvision.ops.roi_align``.
        output_size: (out_h, out_w).
        input_shape: (N, C, H, W) of the feature map.

    Returns:
        (N*H*W, K*out_h*out_w) sparse CSR matrix with int32 indices: row ``(n*H + y)*W + x`` is an
        input pixel, column ``(k*out_h + i)*out_w + j`` an output bin, the value the pixel's weight
        in that bin (bilinear weight / points in the bin); rows sorted, duplicates not merged.
    """
    out_h, out_w = output_size
    n, _, height, width = input_shape
    dtype = rois.dtype
    k = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x0
    roi_h = rois[:, 4] * spatial_scale - offset - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((k,), sampling_ratio, dtype=torch.int32)
    else:  # ceil(bin size) points per side; a negative extent (aligned, x1 < x0) has none
        grid_h = torch.ceil(roi_h / out_h).clamp(min=0).to(torch.int32)
        grid_w = torch.ceil(roi_w / out_w).clamp(min=0).to(torch.int32)
    count = (grid_h * grid_w).clamp(min=1).to(dtype)

    # Everything that depends on one axis only is computed per axis term (few) and gathered per
    # point (many): y terms carry the image's offset, the row stride, the bin row and 1 / count.
    y_roi, y_bin, y_low, y_high, wy_low, wy_high = _axis_terms(y0, roi_h, grid_h, out_h, height, dtype)
    x_roi, x_bin, x_low, x_high, wx_low, wx_high = _axis_terms(x0, roi_w, grid_w, out_w, width, dtype)
    y_base = (rois[:, 0].to(torch.int32) * height).index_select(0, y_roi)
    y_ints = torch.stack([(y_base + y_low) * width, (y_base + y_high) * width,
                          (y_roi.to(torch.int32) * out_h + y_bin) * out_w], 1)
    y_weights = torch.stack([wy_low, wy_high], 1) / count.index_select(0, y_roi)[:, None]
    x_ints = torch.stack([x_low, x_high, x_bin], 1)
    x_weights = torch.stack([wx_low, wx_high], 1)

    # A RoI's points are the product of its y terms and its x terms: its point t pairs its y term
    # t // x_count and its x term t % x_count.
    y_count, x_count = grid_h * out_h, grid_w * out_w
    roi, local = _ragged_arange(y_count * x_count)
    per_roi = torch.stack([x_count, torch.cumsum(y_count, 0, dtype=torch.int32) - y_count,
                           torch.cumsum(x_count, 0, dtype=torch.int32) - x_count], 1).index_select(0, roi)
    y_i = torch.div(local, per_roi[:, 0], rounding_mode="floor")
    x_i = local - y_i * per_roi[:, 0] + per_roi[:, 2]
    y_i += per_roi[:, 1]
    y_ints, y_weights = y_ints.index_select(0, y_i), y_weights.index_select(0, y_i)
    x_ints, x_weights = x_ints.index_select(0, x_i), x_weights.index_select(0, x_i)

    pixel = (y_ints[:, :2, None] + x_ints[:, None, :2]).reshape(-1)  # (P*4,) the 4 neighbours
    weight = (y_weights[:, :, None] * x_weights[:, None, :]).reshape(-1)
    column = (y_ints[:, 2] + x_ints[:, 2])[:, None].expand(-1, 4).reshape(-1)

    order = torch.argsort(pixel, stable=True)
    rows = n * height * width
    crow = torch.zeros(rows + 1, dtype=torch.int32)
    torch.cumsum(torch.bincount(pixel, minlength=rows), 0, dtype=torch.int32, out=crow[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is not
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, column.index_select(0, order), weight.index_select(0, order),
                                       (rows, k * out_h * out_w))


def roi_align_backward(
    grad_output: Tensor, rois: Tensor, spatial_scale: float, input_shape: tuple[int, int, int, int],
    sampling_ratio: int, aligned: bool, channels_last: bool = False,
) -> Tensor:
    """The gradient of ``torchvision.ops.roi_align`` with respect to its input.

    Args:
        grad_output: (K, C, out_h, out_w).
        rois, spatial_scale, sampling_ratio, aligned: those of the forward.
        input_shape: (N, C, H, W) of the forward's input.
        channels_last: return the gradient in channels_last memory format (no transposing copy).

    Returns:
        (N, C, H, W) gradient, torchvision's to float rounding.
    """
    k, c, out_h, out_w = grad_output.shape
    n, _, height, width = input_shape
    if k == 0:
        grad = grad_output.new_zeros(input_shape)
        return grad.contiguous(memory_format=torch.channels_last) if channels_last else grad
    matrix = sampling_matrix(rois.to(grad_output.dtype), spatial_scale, (out_h, out_w), input_shape,
                             sampling_ratio, aligned)
    bins_by_channel = grad_output.permute(0, 2, 3, 1).reshape(k * out_h * out_w, c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixels_by_channel = torch.sparse.mm(matrix, bins_by_channel)  # (N*H*W, C)
    grad = pixels_by_channel.reshape(n, height, width, c).permute(0, 3, 1, 2)
    return grad if channels_last else grad.contiguous()
