"""RoIAlign's sparse backward: hand-computed weights, and torchvision's gradient to float rounding."""

from __future__ import annotations

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

from framework.layers import parallel_ops
from framework.layers.roi_align_sparse import roi_align_backward, sampling_matrix


def _dense(rois, shape, output_size=(1, 1), sampling_ratio=1, aligned=False, scale=1.0) -> torch.Tensor:
    return sampling_matrix(torch.tensor(rois, dtype=torch.float32), scale, output_size, shape,
                           sampling_ratio, aligned).to_dense()


def test_one_sample_at_a_pixel_corner_weighs_its_four_neighbours_a_quarter():
    # Box 0.5..2.5 on a 4x4 map, one bin, one sample: its centre (1.5, 1.5) lies between pixels 1 and 2
    # on both axes.
    m = _dense([[0, 0.5, 0.5, 2.5, 2.5]], (1, 1, 4, 4))
    expected = torch.zeros(16, 1)
    expected[[1 * 4 + 1, 1 * 4 + 2, 2 * 4 + 1, 2 * 4 + 2]] = 0.25
    assert torch.equal(m, expected)


def test_points_left_of_the_map_clamp_within_a_pixel_and_vanish_beyond():
    # x centre -1.0 (box -1.5..-0.5, width 1): within one pixel of the border, so it reads column 0;
    # y centre 1.5: rows 1 and 2, half each.
    m = _dense([[0, -1.5, 1.0, -0.5, 2.0]], (1, 1, 4, 4))
    expected = torch.zeros(16, 1)
    expected[[1 * 4 + 0, 2 * 4 + 0]] = 0.5
    assert torch.equal(m, expected)
    # x centre -1.25: more than one pixel outside, nothing.
    assert torch.equal(_dense([[0, -1.75, 1.0, -0.75, 2.0]], (1, 1, 4, 4)), torch.zeros(16, 1))


def test_last_pixel_takes_the_whole_weight_at_the_far_border_and_images_are_offset():
    # Second image of two, 3x5 map: x centre 4.5 is past the last column's centre -> column 4 only;
    # y centre 1.0 exactly -> row 1 only.
    m = _dense([[1, 4.0, 0.5, 5.0, 1.5]], (2, 1, 3, 5))
    expected = torch.zeros(30, 1)
    expected[15 + 1 * 5 + 4] = 1.0
    assert torch.equal(m, expected)


def test_adaptive_sampling_averages_ceil_of_the_bin_size_points_per_side():
    # aligned, one bin, box 0..3 x 0..2 shifted by half a pixel to -0.5..2.5 x -0.5..1.5: ceil(3) x ceil(2)
    # = 6 points, at x in {0, 1, 2} and y in {0, 1}; each lands on a pixel and weighs 1/6.
    m = _dense([[0, 0.0, 0.0, 3.0, 2.0]], (1, 1, 4, 4), sampling_ratio=0, aligned=True)
    expected = torch.zeros(16, 1)
    expected[[0, 1, 2, 4, 5, 6]] = 1 / 6
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-7)


def _rois(n: int, images: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Boxes partly outside the map, some of them empty or inverted."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) - 1
    index = torch.randint(0, images, (n, 1), generator=g).float()
    return torch.cat([index, xy, xy + wh], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("output_size", [(7, 7), (14, 14), (3, 5)])
@pytest.mark.parametrize("shape", [(2, 5, 24, 32), (1, 3, 7, 9)])
def test_gradient_is_torchvisions(aligned, sampling_ratio, output_size, shape):
    n, c, h, w = shape
    rois = _rois(150, n, (h * 4, w * 4), seed=sampling_ratio)
    grad = torch.randn(len(rois), c, *output_size, generator=torch.Generator().manual_seed(1))
    theirs = torch.ops.torchvision._roi_align_backward(grad, rois, 0.25, *output_size, n, c, h, w,
                                                       sampling_ratio, aligned)
    ours = roi_align_backward(grad, rois, 0.25, shape, sampling_ratio, aligned)
    assert ours.is_contiguous()
    # A pixel sums up to thousands of terms, in another order: float32 rounding of the largest sums.
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))
    nhwc = roi_align_backward(grad, rois, 0.25, shape, sampling_ratio, aligned, channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, ours)


@pytest.mark.parametrize("aligned, sampling_ratio", [(True, 0), (False, 2)])
def test_the_matrix_is_also_the_forward(aligned, sampling_ratio):
    n, c, h, w = 2, 6, 20, 28
    x = torch.randn(n, c, h, w)
    rois = _rois(80, n, (h * 4, w * 4), seed=3)
    m = sampling_matrix(rois, 0.25, (7, 7), x.shape, sampling_ratio, aligned).to_dense()
    pooled = (m.t() @ x.permute(0, 2, 3, 1).reshape(-1, c)).reshape(len(rois), 7, 7, c).permute(0, 3, 1, 2)
    torch.testing.assert_close(pooled, torchvision.ops.roi_align(x, rois, (7, 7), 0.25, sampling_ratio, aligned),
                               rtol=1e-5, atol=1e-5)


def test_gradcheck_in_float64_through_the_layer():
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = _rois(12, 2, (36, 44), seed=5).double()
    assert torch.autograd.gradcheck(lambda t: parallel_ops.roi_align(t, rois, (3, 3), 0.25, 0, True), (x,))


def test_no_rois_give_a_zero_gradient_and_repeated_calls_agree_bitwise():
    assert torch.equal(roi_align_backward(torch.zeros(0, 4, 7, 7), torch.zeros(0, 5), 0.25, (1, 4, 8, 8), 0, True),
                       torch.zeros(1, 4, 8, 8))
    rois = _rois(200, 2, (96, 128), seed=7)
    grad = torch.randn(200, 16, 7, 7)
    first = roi_align_backward(grad, rois, 0.25, (2, 16, 24, 32), 0, True)
    assert torch.equal(first, roi_align_backward(grad, rois, 0.25, (2, 16, 24, 32), 0, True))
