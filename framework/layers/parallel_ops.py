"""torchvision's RoIAlign and batched NMS, faster on a CPU's threads.

torchvision's CPU kernels for ``roi_align`` (forward and backward) and ``nms`` run on one thread,
whatever ``torch.get_num_threads()`` says; on a CPU they are the largest single-threaded part of a
Mask R-CNN step.

* :func:`roi_align` is, with MKL, one sparse matrix product over all channels
  (:mod:`framework.layers.roi_align_sparse`; output and gradient torchvision's to float rounding,
  checked to rtol 1e-5 with atol 1e-6 for the output and 1e-5 for the gradient; several times
  faster). Without MKL it splits the *channels* over Python threads (torchvision's kernels release
  the GIL): every channel is pooled exactly as in one call, so output and gradient are
  bit-identical to ``torchvision.ops.roi_align``.
* :func:`roi_align_levels` pools RoIs from the levels of a pyramid; with MKL all levels in one
  sparse product (the same values as :func:`roi_align` per level).
* :func:`batched_nms` splits the *classes*: NMS never compares boxes of different classes, and the
  kept set is sorted by score the way torchvision sorts it, so the indices are those of
  ``torchvision.ops.batched_nms``.

Under CPU autocast both compute in float32 on the fast path, as torchvision's autocast kernels do
(autocast is per thread, so the float32 copies are made before the work goes to the pool).

On a GPU both call torchvision directly; so does work too small to be worth a thread hand-off. The
worker threads live in one process-wide pool (rebuilt after a fork, e.g. in a DataLoader worker);
the calling thread takes the first share itself.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, TypeVar

import torch
from torch import Tensor
from torchvision import ops

from framework.layers import roi_align_sparse
from framework.layers.graph_capture import is_exporting
from framework.layers.level_pooling import pool_by_level
from framework.layers.memory_format import contiguous_nchw

__all__ = ["batched_nms_per_class", "roi_align", "roi_align_levels", "batched_nms", "num_workers"]

T = TypeVar("T")

#: Below this many output elements (RoIs x channels x bins) a RoIAlign runs in one call.
MIN_ROI_ALIGN_WORK = 1 << 18
#: The sparse RoIAlign's int32 indices address at most this many entries.
MAX_SPARSE_ENTRIES = (1 << 31) - 1
#: Below this many boxes batched NMS runs in one call: torchvision's CPU path switches from one NMS
#: over class-offset boxes to a per-class loop above 1000 boxes (4000 coordinates).
MIN_NMS_BOXES = 1001

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None


def num_workers(device: torch.device, work: int, min_work: int) -> int:
    """How many threads an op of ``work`` units on ``device`` should use (1: call torchvision)."""
    if device.type != "cpu" or work < min_work or torch.jit.is_scripting() or torch.jit.is_tracing():
        return 1
    return max(1, torch.get_num_threads())


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), workers)
    with _pool_lock:
        if _pool_key != key:  # first use, another thread count, or a forked child (threads don't survive a fork)
            _pool = ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="framework-ops")
            _pool_key = key
        return _pool


def _parallel_map(fn: Callable[[T], Tensor], items: Sequence[T]) -> list[Tensor]:
    """``[fn(x) for x in items]``, items[1:] on the pool's threads and items[0] on this one."""
    if len(items) == 1:
        return [fn(items[0])]
    futures = [_executor(len(items)).submit(fn, x) for x in items[1:]]
    first = fn(items[0])
    return [first] + [f.result() for f in futures]


def _channel_slices(channels: int, parts: int) -> list[slice]:
    bounds = [round(i * channels / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class _ChannelSplitRoIAlign(torch.autograd.Function):
    """RoIAlign with the channels pooled in parallel slices, forward and backward."""

    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, spatial_scale: float, output_size: tuple[int, int],
                sampling_ratio: int, aligned: bool, workers: int) -> Tensor:
        slices = _channel_slices(input.shape[1], workers)
        parts = _parallel_map(
            lambda s: torch.ops.torchvision.roi_align(
                input[:, s], rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
            ),
            slices,
        )
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, output_size, sampling_ratio, aligned, tuple(input.shape), slices)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (rois,) = ctx.saved_tensors
        spatial_scale, (ph, pw), sampling_ratio, aligned, (n, _, h, w), slices = ctx.args
        parts = _parallel_map(
            lambda s: torch.ops.torchvision._roi_align_backward(
                grad_output[:, s].contiguous(), rois, spatial_scale, ph, pw, n, s.stop - s.start, h, w,
                sampling_ratio, aligned,
            ),
            slices,
        )
        return torch.cat(parts, dim=1), None, None, None, None, None, None


def _on_cpu_kernels(input: Tensor, rois: Tensor) -> bool:
    """Whether the CPU paths below apply: a CPU tensor, eager (not scripted, traced or exported),
    and (K, 5) rois; elsewhere torchvision's op is called."""
    return (input.device.type == "cpu" and not (torch.jit.is_scripting() or torch.jit.is_tracing() or is_exporting())
            and rois.dim() == 2 and rois.shape[1] == 5)


def _sparse_fits(rois: Tensor, spatial_scale: float | Tensor, output_size: tuple[int, int], channels: int,
                 sampling_ratio: int, aligned: bool) -> bool:
    """Whether the sparse RoIAlign applies: MKL, and a matrix with no more entries than the output
    (huge RoIs with many sampling points are cheaper for torchvision's kernel) or int32 indices."""
    if not torch.backends.mkl.is_available():
        return False
    out_elements = rois.shape[0] * channels * output_size[0] * output_size[1]
    entries = roi_align_sparse.num_entries(rois, spatial_scale, output_size, sampling_ratio, aligned)
    return entries <= min(out_elements, MAX_SPARSE_ENTRIES)


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align``, faster on a CPU.

    On a CPU with MKL: one sparse matrix product (:mod:`framework.layers.roi_align_sparse`), whose
    output and gradient are torchvision's to float rounding (tests/layers/test_parallel_ops.py:
    rtol 1e-5 with atol 1e-6 for the output and 1e-5 for the gradient). Without MKL, or when the
    sparse matrix would outweigh the output: torchvision's kernel with the channels split over the
    threads, bit-identical. bfloat16 and float16 inputs are pooled in float32 and rounded back, as
    torchvision's autocast kernel does. Elsewhere (GPU, scripting): torchvision.

    Args:
        input: (N, C, H, W) feature map, any memory format.
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)`` boxes in input-image coordinates.
        output_size: (out_h, out_w) bins per box.
        spatial_scale, sampling_ratio, aligned: as in ``torchvision.ops.roi_align``.

    Returns:
        (K, C, out_h, out_w); in ``input``'s memory format on the sparse path, NCHW otherwise.
    """
    output_size = tuple(output_size)
    if not _on_cpu_kernels(input, rois):
        return ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    if input.dtype in (torch.bfloat16, torch.float16):
        # What torchvision's autocast kernel does (float32 in, the input's dtype out), done here rather
        # than left to it: its kernel would run on one thread. Autocast is off inside so that the
        # sparse product stays float32, as torchvision's kernel does.
        with torch.autocast("cpu", enabled=False):
            out = roi_align(input.float(), rois.float(), output_size, spatial_scale, sampling_ratio, aligned)
        return out.to(input.dtype)
    if input.dtype not in (torch.float32, torch.float64):
        return ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    rois = rois.to(input.dtype)
    if _sparse_fits(rois, spatial_scale, output_size, input.shape[1], sampling_ratio, aligned):
        return roi_align_sparse.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    input = contiguous_nchw(input)  # torchvision reads NCHW, and would copy per slice
    out_elements = rois.shape[0] * input.shape[1] * output_size[0] * output_size[1]
    workers = min(num_workers(input.device, out_elements, MIN_ROI_ALIGN_WORK), input.shape[1])
    if workers == 1:
        return ops.roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return _ChannelSplitRoIAlign.apply(input, rois, spatial_scale, output_size, sampling_ratio, aligned, workers)


def roi_align_levels(
    inputs: Sequence[Tensor],
    rois: Tensor,
    levels: Tensor,
    output_size: tuple[int, int],
    spatial_scales: Sequence[float],
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI k pooled by :func:`roi_align` from ``inputs[levels[k]]`` at ``spatial_scales[levels[k]]``.

    On a CPU with MKL all levels go through one sparse matrix product (whose columns run over the
    pixels of every level; :func:`framework.layers.roi_align_sparse.roi_align_levels`): one matrix
    to build, one product and one transposed product in the backward, instead of one of each per
    level plus the gathering of RoIs by level and the scattering of their results. Each RoI's
    values are :func:`roi_align`'s on its level (the same matrix rows). Elsewhere, or where the
    sparse path does not apply: :func:`~framework.layers.level_pooling.pool_by_level` with
    :func:`roi_align`.

    Args:
        inputs: one (N, C, H_l, W_l) feature map per level, the same dtype and memory format.
        rois: (K, 5) ``(batch_index, x0, y0, x1, y1)`` boxes in input-image coordinates.
        levels: (K,) int64 index into ``inputs`` per RoI.
        output_size, sampling_ratio, aligned: as in :func:`roi_align`.
        spatial_scales: one per level.

    Returns:
        (K, C, out_h, out_w) in the memory format of ``inputs[0]``.
    """
    output_size = tuple(output_size)
    dtype = inputs[0].dtype
    if _on_cpu_kernels(inputs[0], rois) and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        # Reduced precision: pooled in float32 (the maps cast while stacked) and rounded back, as
        # roi_align does; autocast off inside.
        compute = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        with torch.autocast("cpu", enabled=False):
            rois = rois.to(compute)
            scales = torch.tensor(spatial_scales, dtype=compute).index_select(0, levels)
            if _sparse_fits(rois, scales, output_size, inputs[0].shape[1], sampling_ratio, aligned):
                out = roi_align_sparse.roi_align_levels(inputs, rois, levels, output_size, spatial_scales,
                                                        sampling_ratio, aligned)
                return out.to(dtype)
    return pool_by_level(inputs, rois, levels, output_size, lambda level, level_rois: roi_align(
        inputs[level], level_rois, output_size, spatial_scales[level], sampling_ratio, aligned))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *,
                num_classes: Optional[int] = None) -> Tensor:
    """``torchvision.ops.batched_nms`` with the classes split over the CPU threads (same result).

    Args:
        boxes: (N, 4) XYXY boxes.
        scores: (N,) scores.
        idxs: (N,) int class (or level) of each box; boxes of different classes never suppress
            each other.
        iou_threshold: boxes overlapping a higher-scored box of their class by IoU > this go.
        num_classes: the class ids lie in [0, num_classes) (None: unknown). Only read while
            exporting (:func:`batched_nms_per_class`), where a graph needs the classes up front.

    Returns:
        (K,) int64 indices of the kept boxes in decreasing order of score, equal to torchvision's
        (under autocast, to torchvision's under autocast: bf16 and fp16 boxes and scores are
        compared in float32).
    """
    if is_exporting():
        if num_classes is None:
            raise ValueError("batched_nms: exporting needs num_classes (the classes' count), to record one NMS per class")
        return batched_nms_per_class(boxes, scores, idxs, iou_threshold, num_classes=num_classes)
    workers = num_workers(boxes.device, boxes.shape[0], MIN_NMS_BOXES)
    if workers == 1 or not {boxes.dtype, scores.dtype} <= {torch.float32, torch.bfloat16, torch.float16}:
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    classes, counts = torch.unique(idxs, return_counts=True)
    if len(classes) < 2:
        return ops.batched_nms(boxes, scores, idxs, iou_threshold)
    # torchvision's autocast NMS compares float32 copies of lower-precision boxes and scores; the
    # pool's threads do not see this thread's autocast state, so the copies are made here.
    boxes32, scores32 = boxes.float(), scores.float()
    # Deal the classes out largest first to the least loaded thread: NMS costs grow with the count.
    groups: list[list[int]] = [[] for _ in range(min(workers, len(classes)))]
    load = [0] * len(groups)
    for i in torch.argsort(counts, descending=True, stable=True).tolist():
        g = load.index(min(load))
        groups[g].append(int(classes[i]))
        load[g] += int(counts[i])

    # Each class's members, ascending (a stable sort by class): one pass instead of a comparison
    # of every box per class (80 classes x 80,000 boxes at a score threshold of 0).
    by_class = torch.argsort(idxs, stable=True)
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    slices = {int(c): (start, int(n)) for c, start, n in zip(classes.tolist(), starts, counts.tolist())}

    def keep_of(group: list[int]) -> Tensor:
        kept = []
        for class_id in group:
            start, n = slices[class_id]
            members = by_class[start:start + n]
            kept.append(members[ops.nms(boxes32[members], scores32[members], iou_threshold)])
        return torch.cat(kept)

    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for kept in _parallel_map(keep_of, groups):
        keep_mask[kept] = True
    # torchvision's per-class path ends the same way: kept indices ascending, then a sort by the
    # scores as given (in their own dtype, so that ties are ordered alike).
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]


def batched_nms_per_class(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, *,
                          num_classes: int) -> Tensor:
    """Batched NMS as one ``torchvision.ops.nms`` per class id in ``range(num_classes)``, for a graph.

    What torchvision's per-class path (and :func:`batched_nms` on several threads) computes, with
    no branch on the number of boxes and no class-offset trick: offsetting boxes by the class
    times the largest coordinate costs float32 precision (a coordinate of 1e5 has a spacing of
    0.008 px), which moves IoUs near the threshold. A graph records ``num_classes`` NMS calls; a
    class without boxes costs an empty one.

    Args and returns: as :func:`batched_nms` (kept indices, by decreasing score).
    """
    kept = []
    for class_id in range(num_classes):
        members = torch.nonzero(idxs == class_id).flatten()
        kept.append(members[ops.nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept) if kept else idxs.new_zeros(0, dtype=torch.int64)
    # torchvision's per-class path ends the same way: kept indices ascending, then sorted by score
    keep = keep.sort()[0]
    return keep[scores[keep].sort(descending=True)[1]]
