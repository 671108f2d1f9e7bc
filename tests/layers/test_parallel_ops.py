"""The CPU RoIAlign and batched NMS give torchvision's results: exactly, except RoIAlign's sparse path
(torchvision's output and gradient to float rounding; its own tests are in test_roi_align_sparse.py)."""

from __future__ import annotations

import pytest
import torch
from torchvision import ops

from framework.layers import parallel_ops


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def split_calls(monkeypatch):
    """Counts the calls that went through the thread pool (so a test knows the split path ran)."""
    calls = []
    real = parallel_ops._parallel_map

    def counting(fn, items):
        if len(items) > 1:
            calls.append(len(items))
        return real(fn, items)

    monkeypatch.setattr(parallel_ops, "_parallel_map", counting)
    return calls


def _rois(n: int, images: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = 2 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
    index = torch.randint(0, images, (n, 1), generator=g).float()
    return torch.cat([index, xy, xy + wh], dim=1)


@pytest.fixture
def sparse_calls(monkeypatch):
    """Counts the calls that went to the sparse RoIAlign."""
    calls = []
    real = parallel_ops.roi_align_sparse.roi_align

    def counting(*args):
        calls.append(args[1].shape[0])
        return real(*args)

    monkeypatch.setattr(parallel_ops.roi_align_sparse, "roi_align", counting)
    return calls


@pytest.fixture(params=[True, False], ids=["mkl", "no_mkl"])
def mkl(request, monkeypatch):
    """With MKL the sparse path runs; without it, torchvision's kernel split over the threads."""
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: request.param)
    return request.param


@pytest.mark.parametrize("aligned, sampling_ratio", [(True, 0), (False, 2), (True, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_forward_and_backward_are_torchvisions(two_threads, split_calls, sparse_calls, mkl, aligned,
                                                         sampling_ratio, channels_last):
    torch.manual_seed(0)
    feature = torch.randn(2, 37, 24, 32)  # an odd channel count: unequal slices
    if channels_last:
        feature = feature.contiguous(memory_format=torch.channels_last)
    rois = _rois(300, images=2, size=(96, 128))
    args = ((7, 7), 0.25, sampling_ratio, aligned)

    ours_in = feature.clone().requires_grad_(True)
    theirs_in = feature.clone().requires_grad_(True)
    ours = parallel_ops.roi_align(ours_in, rois, *args)
    theirs = ops.roi_align(theirs_in, rois, *args)
    grad = torch.randn_like(theirs)
    ours.backward(grad)
    theirs.backward(grad)
    if mkl:  # one sparse product: the same sums in another order, in the input's memory format
        assert sparse_calls == [300] and split_calls == []
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-5, atol=1e-5)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert ours.is_contiguous(memory_format=layout) and ours_in.grad.is_contiguous(memory_format=layout)
    else:  # every channel pooled exactly as in one call
        assert sparse_calls == [] and split_calls == [2, 2]
        assert torch.equal(ours, theirs)
        assert torch.equal(ours_in.grad, theirs_in.grad)


def test_roi_align_goes_to_torchvision_when_the_matrix_would_outweigh_the_output(two_threads, sparse_calls):
    # 3 channels, 2x2 points per bin: 16 matrix entries per bin against 3 output values.
    feature = torch.randn(1, 3, 40, 40)
    rois = _rois(2000, images=1, size=(160, 160))
    out = parallel_ops.roi_align(feature, rois, (7, 7), 0.25, 2, False)
    assert sparse_calls == []
    assert torch.equal(out, ops.roi_align(feature, rois, (7, 7), 0.25, 2, False))


def test_roi_align_without_mkl_runs_small_work_and_one_thread_in_one_call(split_calls, two_threads, monkeypatch):
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    feature = torch.randn(1, 8, 16, 16)
    rois = _rois(4, images=1, size=(64, 64))
    out = parallel_ops.roi_align(feature, rois, (7, 7), 0.25, 0, True)
    assert split_calls == []  # 4 x 8 x 49 outputs: below MIN_ROI_ALIGN_WORK
    assert torch.equal(out, ops.roi_align(feature, rois, (7, 7), 0.25, 0, True))

    torch.set_num_threads(1)
    big = torch.randn(1, 64, 32, 32)
    many = _rois(200, images=1, size=(128, 128))
    assert torch.equal(parallel_ops.roi_align(big, many, (7, 7), 0.25, 0, True),
                       ops.roi_align(big, many, (7, 7), 0.25, 0, True))
    assert split_calls == []


def test_roi_align_with_no_rois_keeps_the_graph(two_threads, mkl):
    feature = torch.randn(1, 256, 64, 64, requires_grad=True)
    out = parallel_ops.roi_align(feature, torch.zeros(0, 5), (7, 7), 0.25, 0, True)
    assert out.shape == (0, 256, 7, 7)
    out.sum().backward()
    assert torch.equal(feature.grad, torch.zeros_like(feature))


def _pyramid(channels_last: bool, dtype: torch.dtype):
    """3 levels of a 2-image pyramid (strides 4, 8, 16 of a 96x128 input), 200 RoIs spread over them."""
    g = torch.Generator().manual_seed(7)
    features = [torch.randn(2, 19, 24 // 2 ** i, 32 // 2 ** i, generator=g).to(dtype) for i in range(3)]
    if channels_last:
        features = [f.contiguous(memory_format=torch.channels_last) for f in features]
    levels = torch.randint(0, 3, (200,), generator=g)
    return [f.requires_grad_() for f in features], _rois(200, images=2, size=(96, 128), seed=8), levels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_levels_is_roi_align_per_level_bitwise(two_threads, mkl, channels_last, dtype):
    """One product over all levels (with MKL) gives every RoI exactly what roi_align gives on its
    level, forward and backward (the same matrix rows, the transposed rows in the same order)."""
    features, rois, levels = _pyramid(channels_last, dtype)
    scales = [0.25, 0.125, 0.0625]
    args = ((7, 7), scales, 0, True)
    levels_calls = []
    real = parallel_ops.roi_align_sparse.roi_align_levels
    parallel_ops.roi_align_sparse.roi_align_levels = lambda *a: levels_calls.append(a[1].shape[0]) or real(*a)
    try:
        ours = parallel_ops.roi_align_levels(features, rois, levels, *args)
    finally:
        parallel_ops.roi_align_sparse.roi_align_levels = real
    grad = torch.randn(ours.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
    ours_grads = torch.autograd.grad(ours, features, grad)

    expected = torch.zeros_like(ours)
    for level in range(3):
        inds = torch.nonzero(levels == level).flatten()
        expected[inds] = parallel_ops.roi_align(features[level], rois[inds], (7, 7), scales[level], 0, True)
    expected_grads = torch.autograd.grad(expected, features, grad)
    assert levels_calls == ([200] if mkl else [])  # without MKL: per level, torchvision's kernel
    assert torch.equal(ours, expected)
    assert all(torch.equal(a, b) for a, b in zip(ours_grads, expected_grads))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert ours.dtype == dtype and ours.is_contiguous(memory_format=layout)


def test_roi_align_levels_with_no_rois_keeps_every_levels_graph(two_threads, mkl):
    features, _, _ = _pyramid(True, torch.float32)
    out = parallel_ops.roi_align_levels(features, torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64), (7, 7),
                                        [0.25, 0.125, 0.0625], 0, True)
    assert out.shape == (0, 19, 7, 7)
    grads = torch.autograd.grad(out.sum(), features)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def _nms_inputs(n: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 80], dim=1)
    scores = torch.rand(n, generator=g)
    scores[: n // 10] = 0.5  # ties: the final sort must order them as torchvision's does
    idxs = torch.randint(0, classes, (n,), generator=g)
    return boxes, scores, idxs


@pytest.mark.parametrize("n, classes", [(5000, 90), (4700, 5), (1001, 3)])
def test_batched_nms_is_torchvisions(two_threads, split_calls, n, classes):
    boxes, scores, idxs = _nms_inputs(n, classes)
    ours = parallel_ops.batched_nms(boxes, scores, idxs, 0.5)
    assert split_calls == [2]
    assert torch.equal(ours, ops.batched_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_one_class_or_few_boxes_calls_torchvision(two_threads, split_calls):
    boxes, scores, idxs = _nms_inputs(3000, 1)
    assert torch.equal(parallel_ops.batched_nms(boxes, scores, idxs, 0.7), ops.batched_nms(boxes, scores, idxs, 0.7))
    boxes, scores, idxs = _nms_inputs(1000, 10)  # torchvision's offset-boxes path: one call
    assert torch.equal(parallel_ops.batched_nms(boxes, scores, idxs, 0.7), ops.batched_nms(boxes, scores, idxs, 0.7))
    empty = parallel_ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and split_calls == []


def test_pool_is_rebuilt_in_a_forked_child(two_threads, monkeypatch):
    first = parallel_ops._executor(2)
    assert parallel_ops._executor(2) is first
    monkeypatch.setattr(parallel_ops.os, "getpid", lambda: -1)  # as if in a child after fork
    assert parallel_ops._executor(2) is not first



@pytest.mark.parametrize("n, classes", [(5000, 20), (800, 20)])
def test_under_bf16_autocast_batched_nms_is_torchvisions(two_threads, split_calls, n, classes):
    """Autocast is per thread, so the pool's threads get the float32 copies torchvision's autocast
    kernel would make; the final sort is by the bf16 scores, whose many ties must order alike."""
    boxes, scores, idxs = _nms_inputs(n, classes)
    scores = scores.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = parallel_ops.batched_nms(boxes, scores, idxs, 0.5)
        theirs = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert split_calls == ([2] if n > parallel_ops.MIN_NMS_BOXES else [])
    assert torch.equal(ours, theirs)


def test_under_bf16_autocast_roi_align_is_torchvisions(two_threads, split_calls, sparse_calls, mkl):
    """bf16 features are pooled in float32 on the fast path and rounded back, forward and backward,
    as torchvision's autocast kernel does: bit-identical when split by channels, within one bf16
    rounding on the sparse path (whose float32 sums round differently)."""
    feature = torch.randn(2, 64, 40, 48).to(torch.bfloat16)
    rois = _rois(300, images=2, size=(160, 192))
    grad = torch.randn(300, 64, 7, 7).to(torch.bfloat16)
    results = []
    for op in (parallel_ops.roi_align, ops.roi_align):
        leaf = feature.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = op(leaf, rois, (7, 7), 0.25, 0, True)
        out.backward(grad)
        results.append((out, leaf.grad))
    (out, feature_grad), (expected_out, expected_grad) = results
    assert out.dtype == expected_out.dtype == feature_grad.dtype == torch.bfloat16
    assert (sparse_calls, split_calls) == (([300], []) if mkl else ([], [2, 2]))  # forward, backward
    if mkl:
        torch.testing.assert_close(out, expected_out)
        torch.testing.assert_close(feature_grad, expected_grad)
    else:
        assert torch.equal(out, expected_out) and torch.equal(feature_grad, expected_grad)
