"""RoIAlign on a CPU as one sparse-dense matrix product, forward and backward.

RoIAlign is linear in its input: every output bin is a weighted sum of input pixels (bilinear
weights, averaged over the bin's sampling points). torchvision's CPU kernel recomputes the weights
of every sampling point once per *channel*, on one thread, and its backward scatters one float at a
time; on a CPU, Mask R-CNN's RoIAlign forward and backward are a large share of an inference and of
a training step.

Here the weights are computed once per (RoI, bin, sampling point), vectorised, as a sparse matrix
``M`` of shape (K*out_h*out_w, N*H*W) in CSR form, and ``roi_align(x) = M @ x`` with ``x`` viewed as
(N*H*W, C), i.e. channels_last: MKL's sparse product, vectorised along the channels and spread over
the threads; autograd's backward is ``M.T @ grad``, with ``M.T`` built as a CSR matrix here (one
sort of the column indices; torch's own conversion of the transposed view takes about twice as
long). RoIs pooled from different levels of a feature pyramid share one matrix, whose columns run
over the pixels of all the levels (:func:`roi_align_levels`). The sampling rule is torchvision's
(``roi_align_kernel.cpp``) to the letter: the same sampling points in the input's dtype, the same
clamping at the borders, points more than one pixel outside the map contribute nothing,
``sampling_ratio <= 0`` samples ``ceil(bin size)`` points per bin side. Only the summation order
differs, so output and gradient match torchvision's to float rounding
(tests/layers/test_roi_align_sparse.py checks rtol 1e-5 and atol 1e-6, for the gradient 1e-6 of its
largest value).
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from framework.layers.memory_format import is_channels_last

__all__ = ["multilevel_sampling_matrix", "num_entries", "roi_align", "roi_align_levels", "sampling_matrix"]

#: The one warning this module hides: torch's notice, given once per process at the first sparse
#: CSR tensor, that "Sparse CSR tensor support is in beta state". The CSR operations used here
#: (building the matrix, ``addmm`` with it and its transpose) are covered by
#: tests/layers/test_roi_align_sparse.py, so the notice tells a user nothing to act on.
CSR_BETA_WARNING = r"Sparse CSR tensor support is in beta state"


@contextmanager
def _csr_beta_warning_hidden() -> Iterator[None]:
    """Ignore :data:`CSR_BETA_WARNING` when torch raises it from this module's code; every other
    warning (another message, category or module) still reaches the caller."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=CSR_BETA_WARNING, category=UserWarning, module=re.escape(__name__) + r"\Z"
        )
        yield


class _SparseProduct(torch.autograd.Function):
    """``matrix @ dense`` for a sparse CSR ``matrix``, differentiable in ``dense``.

    What ``torch.sparse.mm`` computes, bit for bit, without its overhead on a CPU: it makes a
    zero-filled input for ``addmm`` and copies it into the result before the product (two passes
    over the output), and its backward converts the transposed view ``matrix.t()`` (CSC) back to
    CSR by a slower route than :func:`_transposed`. Here the product writes straight into an
    uninitialised output (``beta=0``, so the output's previous contents are ignored, NaN
    included); the backward is the same Function with the transposed matrix, so it is
    differentiable again.

    Shape:
        matrix (R, P) sparse CSR, dense (P, C) -> (R, C).
    """

    @staticmethod
    def forward(ctx, matrix: Tensor, dense: Tensor) -> Tensor:
        ctx.matrix = matrix
        out = torch.empty(matrix.shape[0], dense.shape[1], dtype=dense.dtype, device=dense.device)
        with _csr_beta_warning_hidden():
            return torch.addmm(out, matrix, dense, beta=0, out=out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, _SparseProduct.apply(_transposed(ctx.matrix), grad)


def _transposed(matrix: Tensor) -> Tensor:
    """The transpose of a CSR matrix (R, P) as a CSR matrix (P, R), with int32 indices.

    Each new row lists its entries in the order of their old rows (a stable sort of the column
    indices), the order torch's conversion gives too, so products with it are bit-identical.
    """
    rows, cols = matrix.shape
    crow, col = matrix.crow_indices(), matrix.col_indices()
    order = torch.sort(col, stable=True).indices
    new_crow = torch.zeros(cols + 1, dtype=torch.int32, device=col.device)
    torch.cumsum(torch.bincount(col, minlength=cols), 0, dtype=torch.int32, out=new_crow[1:])
    row_of_entry = torch.repeat_interleave(torch.arange(rows, dtype=torch.int32, device=col.device), crow.diff())
    with _csr_beta_warning_hidden():
        return torch.sparse_csr_tensor(new_crow, row_of_entry[order], matrix.values()[order], (cols, rows),
                                       check_invariants=False)


def _ragged_arange(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For counts (K,) int32: the owner k (int64) and the position 0..counts[k]-1 (int32) of each of
    the sum(counts) items, owner after owner."""
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    first = (torch.cumsum(counts, 0, dtype=torch.int32) - counts).index_select(0, owner)
    return owner, torch.arange(len(owner), dtype=torch.int32) - first


def _rois_on_map(rois: Tensor, spatial_scale: float | Tensor, output_size: tuple[int, int], sampling_ratio: int,
                 aligned: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """torchvision's RoI geometry: (K,) starts x0, y0 and extents w, h in feature-map pixels, and
    the sampling points per bin side grid_h, grid_w (int32). ``spatial_scale``: one, or (K,) per RoI."""
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x0
    roi_h = rois[:, 4] * spatial_scale - offset - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((len(rois),), sampling_ratio, dtype=torch.int32)
    else:  # ceil(bin size) points per side; a negative extent (aligned, x1 < x0) has none
        grid_h = torch.ceil(roi_h / output_size[0]).clamp(min=0).to(torch.int32)
        grid_w = torch.ceil(roi_w / output_size[1]).clamp(min=0).to(torch.int32)
    return x0, y0, roi_w, roi_h, grid_h, grid_w


def num_entries(rois: Tensor, spatial_scale: float | Tensor, output_size: tuple[int, int], sampling_ratio: int,
                aligned: bool) -> int:
    """The number of stored entries of :func:`sampling_matrix` (4 per sampling point), cheaply.
    ``spatial_scale``: one, or (K,) per RoI (its level's, for :func:`multilevel_sampling_matrix`)."""
    *_, grid_h, grid_w = _rois_on_map(rois, spatial_scale, output_size, sampling_ratio, aligned)
    return 4 * output_size[0] * output_size[1] * int((grid_h.long() * grid_w).sum())


def _axis_terms(start: Tensor, size: Tensor, grid: Tensor, bins: int, limit: Tensor, dtype: torch.dtype):
    """The sampling points of every RoI along one axis: their two neighbouring pixels and weights.

    Along one axis RoI k has ``bins * grid[k]`` points, ordered (bin, point), laid out flat RoI
    after RoI.

    Args:
        start, size: (K,) the RoIs' start and extent on this axis, in feature-map pixels.
        grid: (K,) int32 sampling points per bin on this axis (>= 0).
        bins: output bins on this axis.
        limit: (K,) int32 size of each RoI's feature map on this axis.

    Returns:
        roi: (P,) int64 RoI of each point;
        low, high: (P,) int32 neighbouring pixels of each point;
        w_low, w_high: (P,) their weights, 0 for a point outside [-1, limit].
    """
    roi, local = _ragged_arange(grid * bins)
    g = grid.index_select(0, roi)
    limit = limit.index_select(0, roi)
    bin_ = torch.div(local, g, rounding_mode="floor")
    point = local - bin_ * g
    bin_size = (size / bins).index_select(0, roi)
    # torchvision: start + bin * bin_size + (point + .5) * bin_size / grid, left to right, in the input's dtype
    pos = start.index_select(0, roi) + bin_.to(dtype) * bin_size + (point.to(dtype) + 0.5) * bin_size / g.to(dtype)
    inside = (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(min=0)
    low = pos.to(torch.int32)  # truncation = floor for pos >= 0
    edge = low >= limit - 1
    low = torch.minimum(low, limit - 1)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low.to(dtype))
    keep = inside.to(dtype)
    return roi, low, high, (1 - frac) * keep, frac * keep


def sampling_matrix(
    rois: Tensor, spatial_scale: float, output_size: tuple[int, int], input_shape: tuple[int, int, int, int],
    sampling_ratio: int, aligned: bool,
) -> Tensor:
    """The RoIAlign weights as a sparse matrix: ``roi_align(x)`` = ``M @ x``, both flattened NHWC.

    Args:
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)`` in input-image coordinates, float32 or float64.
        spatial_scale, sampling_ratio, aligned: as in ``torchvision.ops.roi_align``.
        output_size: (out_h, out_w).
        input_shape: (N, C, H, W) of the feature map.

    Returns:
        (K*out_h*out_w, N*H*W) sparse CSR matrix with int32 indices, in ``rois``' dtype: row
        ``(k*out_h + i)*out_w + j`` is an output bin, column ``(n*H + y)*W + x`` an input pixel, the
        value the pixel's weight in that bin (bilinear weight / points in the bin); a row holds 4
        entries per sampling point of its bin, duplicates not merged.
    """
    return multilevel_sampling_matrix(rois, None, [spatial_scale], output_size, [input_shape], sampling_ratio, aligned)


def multilevel_sampling_matrix(
    rois: Tensor, levels: Optional[Tensor], spatial_scales: Sequence[float], output_size: tuple[int, int],
    input_shapes: Sequence[Sequence[int]], sampling_ratio: int, aligned: bool,
) -> Tensor:
    """:func:`sampling_matrix` for RoIs on several feature maps (the levels of a pyramid), RoI k on
    map ``levels[k]``: the columns run over the pixels of every map, map after map, each NHWC.

    Args:
        rois: (K, 5) as in :func:`sampling_matrix`.
        levels: (K,) int index into ``spatial_scales`` / ``input_shapes`` per RoI; None: all 0.
        spatial_scales: one per map.
        input_shapes: (N, C, H, W) per map (the same N).

    Returns:
        (K*out_h*out_w, sum of N*H*W) sparse CSR matrix, as :func:`sampling_matrix`'s; column
        ``first[l] + (n*H_l + y)*W_l + x`` is pixel (y, x) of image n on map l, ``first[l]`` the
        pixels of the maps before l.
    """
    out_h, out_w = output_size
    bins = out_h * out_w
    dtype = rois.dtype
    k = rois.shape[0]
    sizes = [int(n) * int(h) * int(w) for n, _, h, w in input_shapes]
    first = [sum(sizes[:i]) for i in range(len(sizes))]

    def per_roi(values: Sequence[float | int], value_dtype: torch.dtype) -> Tensor:
        table = torch.tensor(values, dtype=value_dtype)
        return table.expand(k) if levels is None else table.index_select(0, levels)

    height = per_roi([s[2] for s in input_shapes], torch.int32)
    width = per_roi([s[3] for s in input_shapes], torch.int32)
    scale = spatial_scales[0] if levels is None else per_roi(spatial_scales, dtype)
    x0, y0, roi_w, roi_h, grid_h, grid_w = _rois_on_map(rois, scale, output_size, sampling_ratio, aligned)
    per_bin = grid_h * grid_w
    y_roi, y_low, y_high, wy_low, wy_high = _axis_terms(y0, roi_h, grid_h, out_h, height, dtype)
    _, x_low, x_high, wx_low, wx_high = _axis_terms(x0, roi_w, grid_w, out_w, width, dtype)
    # Per y term: both neighbours' first pixel index (map offset, image offset and row stride folded
    # in) and both weights with 1 / points-per-bin folded in; per x term: both neighbours and weights.
    image_first = per_roi(first, torch.int32) + rois[:, 0].to(torch.int32) * height * width
    y_first, y_width = image_first.index_select(0, y_roi), width.index_select(0, y_roi)
    y_rows = torch.stack([y_first + y_low * y_width, y_first + y_high * y_width], 1)
    y_weights = torch.stack([wy_low, wy_high], 1) / per_bin.clamp(min=1).to(dtype).index_select(0, y_roi)[:, None]
    x_cols = torch.stack([x_low, x_high], 1)
    x_weights = torch.stack([wx_low, wx_high], 1)

    # RoI k's points, ordered (bin row i, bin column j, point row, point column), so that the matrix
    # rows come out sorted: its point t lies in bin b = t // per_bin, at (py, px) within the bin, and
    # pairs y term i*grid_h + py with x term j*grid_w + px of that RoI.
    roi, local = _ragged_arange(per_bin * bins)
    per_roi_terms = torch.stack([per_bin, grid_w, grid_h,
                                 torch.cumsum(grid_h * out_h, 0, dtype=torch.int32) - grid_h * out_h,
                                 torch.cumsum(grid_w * out_w, 0, dtype=torch.int32) - grid_w * out_w], 1).index_select(0, roi)
    b = torch.div(local, per_roi_terms[:, 0], rounding_mode="floor")
    within = local - b * per_roi_terms[:, 0]
    py = torch.div(within, per_roi_terms[:, 1], rounding_mode="floor")
    i = torch.div(b, out_w, rounding_mode="floor")
    y_i = per_roi_terms[:, 3] + i * per_roi_terms[:, 2] + py
    x_i = per_roi_terms[:, 4] + (b - i * out_w) * per_roi_terms[:, 1] + (within - py * per_roi_terms[:, 1])
    y_rows, y_weights = y_rows.index_select(0, y_i), y_weights.index_select(0, y_i)
    x_cols, x_weights = x_cols.index_select(0, x_i), x_weights.index_select(0, x_i)
    pixel = (y_rows[:, :, None] + x_cols[:, None, :]).reshape(-1)  # (P*4,) the 4 neighbours
    weight = (y_weights[:, :, None] * x_weights[:, None, :]).reshape(-1)

    crow = torch.zeros(k * bins + 1, dtype=torch.int32)
    torch.cumsum(torch.repeat_interleave(4 * per_bin, bins), 0, dtype=torch.int32, out=crow[1:])
    # Valid by construction (crow a cumulative sum, every column a pixel of the maps, the neighbours
    # being clamped into them), so torch's invariant checks are turned off explicitly: saying so is
    # also what keeps torch from warning that they are off by default.
    with _csr_beta_warning_hidden():
        return torch.sparse_csr_tensor(crow, pixel, weight, (k * bins, sum(sizes)), check_invariants=False)


def roi_align(input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool) -> Tensor:
    """``torchvision.ops.roi_align`` as ``sampling_matrix(...) @ input``, differentiable in ``input``.

    Args:
        input: (N, C, H, W) float32 or float64 CPU feature map, any memory format (channels_last
            is read without a copy).
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)`` in input-image coordinates, ``input``'s dtype.
        output_size, spatial_scale, sampling_ratio, aligned: as in ``torchvision.ops.roi_align``.

    Returns:
        (K, C, out_h, out_w) in ``input``'s memory format, torchvision's output to float rounding
        (rtol 1e-5, atol 1e-6 in the tests); the gradient for ``input`` (``M.T @ grad``) likewise.
    """
    return roi_align_levels([input], rois, None, output_size, [spatial_scale], sampling_ratio, aligned)


def roi_align_levels(inputs: Sequence[Tensor], rois: Tensor, levels: Optional[Tensor], output_size: tuple[int, int],
                     spatial_scales: Sequence[float], sampling_ratio: int, aligned: bool) -> Tensor:
    """RoI k pooled from ``inputs[levels[k]]`` as :func:`roi_align` pools it, all in one product.

    Args:
        inputs: (N, C, H_l, W_l) CPU feature maps, one per level, the same N, C, dtype and memory
            format; pooled in ``rois``' dtype (float32 or float64): bf16 / fp16 maps are cast while
            they are stacked.
        rois: (K, 5) as in :func:`roi_align`.
        levels: (K,) int64 level of each RoI; None with one input.
        spatial_scales: one per level.
        output_size, sampling_ratio, aligned: as in ``torchvision.ops.roi_align``.

    Returns:
        (K, C, out_h, out_w) in the inputs' memory format and ``rois``' dtype: each RoI what
        :func:`roi_align` gives on its level (the same matrix rows, so the same values), gradients
        for every input.
    """
    c = inputs[0].shape[1]
    out_h, out_w = output_size
    matrix = multilevel_sampling_matrix(rois.detach(), levels, spatial_scales, output_size,
                                        [x.shape for x in inputs], sampling_ratio, aligned)
    # (N*H*W, C) per level: a view when channels_last; several levels stacked in one pass (a copy)
    pixels = [x.permute(0, 2, 3, 1).reshape(-1, c) for x in inputs]
    if len(pixels) == 1:
        stacked = pixels[0].to(rois.dtype)
    elif all(p.dtype == rois.dtype for p in pixels):
        stacked = torch.cat(pixels)
    else:  # cast while copying (autograd routes each slice's gradient back, cast to its level's dtype)
        stacked = torch.empty(sum(p.shape[0] for p in pixels), c, dtype=rois.dtype, device=rois.device)
        start = 0
        for p in pixels:
            stacked[start:start + p.shape[0]] = p
            start += p.shape[0]
    bins = _SparseProduct.apply(matrix, stacked)  # (K*out_h*out_w, C)
    out = bins.view(rois.shape[0], out_h, out_w, c).permute(0, 3, 1, 2)
    return out if is_channels_last(inputs[0]) else out.contiguous()
