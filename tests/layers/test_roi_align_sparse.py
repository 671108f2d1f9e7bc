"""RoIAlign as a sparse matrix product: hand-computed weights, and torchvision's output and gradient
to float rounding."""

from __future__ import annotations

import pytest
import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

from framework.layers.roi_align_sparse import num_entries, roi_align, sampling_matrix


def _dense(rois, shape, output_size=(1, 1), sampling_ratio=1, aligned=False, scale=1.0) -> torch.Tensor:
    """The matrix's single row (one RoI, one bin) as a dense (H*W,) vector."""
    return sampling_matrix(torch.tensor(rois, dtype=torch.float32), scale, output_size, shape,
                           sampling_ratio, aligned).to_dense()[0]


def test_one_sample_at_a_pixel_corner_weighs_its_four_neighbours_a_quarter():
    # Box 0.5..2.5 on a 4x4 map, one bin, one sample: its centre (1.5, 1.5) lies between pixels 1 and 2
    # on both axes.
    m = _dense([[0, 0.5, 0.5, 2.5, 2.5]], (1, 1, 4, 4))
    expected = torch.zeros(16)
    expected[[1 * 4 + 1, 1 * 4 + 2, 2 * 4 + 1, 2 * 4 + 2]] = 0.25
    assert torch.equal(m, expected)


def test_points_left_of_the_map_clamp_within_a_pixel_and_vanish_beyond():
    # x centre -1.0 (box -1.5..-0.5, width 1): within one pixel of the border, so it reads column 0;
    # y centre 1.5: rows 1 and 2, half each.
    m = _dense([[0, -1.5, 1.0, -0.5, 2.0]], (1, 1, 4, 4))
    expected = torch.zeros(16)
    expected[[1 * 4 + 0, 2 * 4 + 0]] = 0.5
    assert torch.equal(m, expected)
    # x centre -1.25: more than one pixel outside, nothing.
    assert torch.equal(_dense([[0, -1.75, 1.0, -0.75, 2.0]], (1, 1, 4, 4)), torch.zeros(16))


def test_last_pixel_takes_the_whole_weight_at_the_far_border_and_images_are_offset():
    # Second image of two, 3x5 map: x centre 4.5 is past the last column's centre -> column 4 only;
    # y centre 1.0 exactly -> row 1 only.
    m = _dense([[1, 4.0, 0.5, 5.0, 1.5]], (2, 1, 3, 5))
    expected = torch.zeros(30)
    expected[15 + 1 * 5 + 4] = 1.0
    assert torch.equal(m, expected)


def test_adaptive_sampling_averages_ceil_of_the_bin_size_points_per_side():
    # aligned, one bin, box 0..3 x 0..2 shifted by half a pixel to -0.5..2.5 x -0.5..1.5: ceil(3) x ceil(2)
    # = 6 points, at x in {0, 1, 2} and y in {0, 1}; each lands on a pixel and weighs 1/6.
    m = _dense([[0, 0.0, 0.0, 3.0, 2.0]], (1, 1, 4, 4), sampling_ratio=0, aligned=True)
    expected = torch.zeros(16)
    expected[[0, 1, 2, 4, 5, 6]] = 1 / 6
    torch.testing.assert_close(m, expected, rtol=0, atol=1e-7)


def test_each_bin_row_holds_four_entries_per_sampling_point():
    # Two RoIs, 2x3 bins: the first sampled 2x2 per bin, the second (aligned, 1.2 x 0.6 pixel bins)
    # ceil -> 2 x 1 per bin; num_entries predicts the total without building the matrix.
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 8.0], [0, 2.0, 2.0, 5.6, 3.2]])
    m = sampling_matrix(rois, 1.0, (2, 3), (1, 1, 10, 10), 2, True)
    counts = m.crow_indices().diff()
    assert counts.tolist() == [16] * 6 + [16] * 6
    m = sampling_matrix(rois, 1.0, (2, 3), (1, 1, 10, 10), 0, True)
    # RoI 0: bins 4 x 2.67 -> 4 x 3 points; RoI 1: bins 0.6 x 1.2 -> 1 x 2 points
    assert m.crow_indices().diff().tolist() == [48] * 6 + [8] * 6
    assert num_entries(rois, 1.0, (2, 3), 0, True) == m.values().numel() == 6 * 48 + 6 * 8


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
def test_output_and_gradient_are_torchvisions(aligned, sampling_ratio, output_size, shape):
    n, c, h, w = shape
    rois = _rois(150, n, (h * 4, w * 4), seed=sampling_ratio)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), requires_grad=True)
    theirs = torchvision.ops.roi_align(x, rois, output_size, 0.25, sampling_ratio, aligned)
    grad = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1))
    (their_grad,) = torch.autograd.grad(theirs, x, grad)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x_in = x.detach().contiguous(memory_format=memory_format).requires_grad_()
        ours = roi_align(x_in, rois, output_size, 0.25, sampling_ratio, aligned)
        assert ours.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        (our_grad,) = torch.autograd.grad(ours, x_in, grad)
        # A pixel sums up to thousands of terms, in another order: float32 rounding of the largest sums.
        torch.testing.assert_close(our_grad, their_grad, rtol=1e-5, atol=1e-6 * float(their_grad.abs().max()))


def test_gradcheck_in_float64():
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    rois = _rois(12, 2, (36, 44), seed=5).double()
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (3, 3), 0.25, 0, True), (x,))


def test_no_rois_give_an_empty_output_and_a_zero_gradient():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), (7, 7), 0.25, 0, True)
    assert out.shape == (0, 4, 7, 7)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros(1, 4, 8, 8))


def test_repeated_calls_agree_bitwise():
    rois = _rois(200, 2, (96, 128), seed=7)
    x = torch.randn(2, 16, 24, 32, requires_grad=True)
    grad = torch.randn(200, 16, 7, 7)
    first = roi_align(x, rois, (7, 7), 0.25, 0, True)
    (first_grad,) = torch.autograd.grad(first, x, grad)
    second = roi_align(x, rois, (7, 7), 0.25, 0, True)
    (second_grad,) = torch.autograd.grad(second, x, grad)
    assert torch.equal(first, second) and torch.equal(first_grad, second_grad)


def test_sparse_product_is_torch_sparse_mm_bitwise_and_ignores_the_uninitialised_output(monkeypatch):
    import warnings

    from framework.layers.roi_align_sparse import _SparseProduct

    rois = _rois(300, 2, (96, 128), seed=3)
    x = torch.randn(2, 16, 24, 32, generator=torch.Generator().manual_seed(4)).contiguous(memory_format=torch.channels_last)
    matrix = sampling_matrix(rois, 0.25, (7, 7), x.shape, 0, True)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 16).requires_grad_()
    grad = torch.randn(matrix.shape[0], 16, generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = torch.sparse.mm(matrix, pixels)
        (expected_grad,) = torch.autograd.grad(expected, pixels, grad)
    empty = torch.empty  # the product must not read its output buffer: hand it NaNs
    monkeypatch.setattr(torch, "empty", lambda *a, **k: empty(*a, **k).fill_(float("nan")))
    out = _SparseProduct.apply(matrix, pixels)
    (out_grad,) = torch.autograd.grad(out, pixels, grad)
    assert torch.equal(out, expected) and torch.equal(out_grad, expected_grad)


def test_transposed_matrix_is_torchs_conversion_of_the_transpose():
    """The backward's M.T, built by one stable sort of the columns, is what torch's CSC -> CSR
    conversion gives (same row pointers, columns and values in the same order), so the backward's
    product sums in the same order as ``torch.sparse.mm``'s."""
    import warnings

    from framework.layers.roi_align_sparse import _transposed

    matrix = sampling_matrix(_rois(300, 2, (96, 128), seed=3), 0.25, (7, 7), (2, 16, 24, 32), 0, True)
    ours = _transposed(matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torchs = matrix.t().to_sparse_csr()
    assert ours.shape == torchs.shape == (2 * 24 * 32, 300 * 49)
    assert torch.equal(ours.crow_indices(), torchs.crow_indices().int())
    assert torch.equal(ours.col_indices(), torchs.col_indices().int())
    assert torch.equal(ours.values(), torchs.values())


def test_gradgradcheck_in_float64():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = _rois(5, 1, (24, 28), seed=6).double()
    assert torch.autograd.gradgradcheck(lambda t: roi_align(t, rois, (2, 2), 0.25, 0, True), (x,))


def _warning_texts(record) -> list[str]:
    return [str(w.message) for w in record]


def test_only_torchs_csr_beta_warning_is_hidden_and_other_warnings_reach_the_caller(monkeypatch):
    """torch's "in beta" notice raised from this module's CSR calls is hidden; another UserWarning
    raised meanwhile, or the same notice attributed to another module, is not."""
    import warnings

    from framework.layers import roi_align_sparse

    beta = "Sparse CSR tensor support is in beta state. If you miss a functionality ..."

    def warning(real, other):
        """``real``, warning the beta notice and ``other`` as if from torch's C++ code."""

        def call(*args, **kwargs):
            # stacklevel=2: attributed to the caller, as torch attributes its C++ code's warnings
            warnings.warn(beta, UserWarning, stacklevel=2)
            warnings.warn(other, UserWarning, stacklevel=2)
            with warnings.catch_warnings():  # torch's own notices would be attributed to this wrapper
                warnings.simplefilter("ignore")
                return real(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "sparse_csr_tensor", warning(torch.sparse_csr_tensor, "another warning while building"))
    monkeypatch.setattr(torch, "addmm", warning(torch.addmm, "another warning in the product"))

    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 20.0]])
    with pytest.warns(UserWarning) as record:
        out = roi_align(x, rois, (2, 2), 0.25, 0, True)
        out.sum().backward()  # the backward builds the transposed matrix and multiplies with it too
    assert sorted(_warning_texts(record)) == ["another warning in the product", "another warning in the product",
                                              "another warning while building", "another warning while building"]
    assert all(w.filename == roi_align_sparse.__file__ for w in record)

    # The same notice attributed to another module (here, this test) is not the module's to hide.
    with pytest.warns(UserWarning, match="in beta state"):
        with roi_align_sparse._csr_beta_warning_hidden():
            warnings.warn(beta, UserWarning)


def test_torchs_own_sparse_warnings_do_not_reach_the_caller(tmp_path):
    """In a fresh process (torch warns once per process), with every warning an error: the real
    notices torch gives for a sparse CSR tensor are the ones hidden (or avoided), forward and backward."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text(
        "import warnings, torch\n"
        "from framework.layers.roi_align_sparse import roi_align\n"
        "warnings.simplefilter('error')\n"
        "x = torch.randn(1, 4, 8, 8, requires_grad=True)\n"
        "out = roi_align(x, torch.tensor([[0.0, 1.0, 1.0, 20.0, 20.0]]), (2, 2), 0.25, 0, True)\n"
        "out.sum().backward()\n"
    )
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
