"""Boxes: construction checks and box algebra on small hand-computed examples."""

import pytest
import torch

from framework.structures import Boxes, pairwise_iou


def test_construction_and_bad_shape():
    b = Boxes([[0, 0, 2, 2], [1, 1, 3, 3]])
    assert b.tensor.dtype == torch.float32 and len(b) == 2
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    with pytest.raises(ValueError, match=r"Boxes\(tensor\): expected an \(N, 4\) tensor .* got shape \(2, 3\)"):
        Boxes(torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"Boxes\(tensor\): expected an \(N, 4\) tensor or nested sequence of "
                                        r"numbers, got list that torch cannot convert"):
        Boxes([[0, 0, 1, 1], [0, 0, 1]])
    with pytest.raises(TypeError, match=r"got str that torch cannot convert"):
        Boxes("0 0 1 1")


def test_area_centers_sides():
    b = Boxes([[0, 0, 2, 3], [1, 2, 5, 4]])
    assert b.area().tolist() == [6.0, 8.0]
    assert b.centers().tolist() == [[1.0, 1.5], [3.0, 3.0]]
    assert b.widths().tolist() == [2.0, 4.0]
    assert b.heights().tolist() == [3.0, 2.0]


def test_indexing_and_cat():
    b = Boxes([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    assert b[1].tensor.tolist() == [[1, 1, 2, 2]]
    assert b[torch.tensor([True, False, True])].tensor[:, 0].tolist() == [0.0, 2.0]
    assert b[torch.tensor([2, 0])].tensor[:, 0].tolist() == [2.0, 0.0]
    with pytest.raises(IndexError, match=r"Boxes\[tensor\(1\)\] on 3 boxes gave a tensor of shape \(4,\), not rows "
                                         r"of boxes: index with an int, a slice, an \(N,\) bool mask"):
        b[torch.tensor(1)]
    with pytest.raises(IndexError, match=r"Boxes\[\(slice\(None, None, None\), 0\)\] on 3 boxes gave a tensor of "
                                         r"shape \(3,\).*use boxes.tensor\[...\] for single coordinates"):
        b[:, 0]
    c = Boxes.cat([b[:1], b[2:]])
    assert c.tensor[:, 0].tolist() == [0.0, 2.0]
    assert len(Boxes.cat([])) == 0


def test_clip_nonempty_inside_scale():
    b = Boxes([[-1, -2, 6, 7], [1, 1, 1, 5]])
    b.clip((5, 4))  # (h, w): x into [0, 4], y into [0, 5]
    assert b.tensor.tolist() == [[0, 0, 4, 5], [1, 1, 1, 5]]
    assert b.nonempty().tolist() == [True, False]

    inside = Boxes([[0, 0, 9, 9], [0, 0, 10, 9], [-1, 0, 5, 5]])
    assert inside.inside_box((10, 10)).tolist() == [True, False, False]
    assert inside.inside_box((10, 10), boundary_threshold=1).tolist() == [True, True, True]

    s = Boxes([[1, 1, 2, 2]])
    s.scale(2.0, 3.0)
    assert s.tensor.tolist() == [[2, 3, 4, 6]]


def test_clip_rejects_nan_and_inf_naming_the_rows():
    with pytest.raises(FloatingPointError, match=r"Boxes.clip: 1 of 1 boxes have NaN or infinite coordinates "
                                                 r"\(rows 0; row 0 is \[0.0, 0.0, nan, 1.0\]\)"):
        Boxes([[0, 0, float("nan"), 1]]).clip((5, 5))
    boxes = torch.zeros(8, 4)
    boxes[[1, 3, 4, 5, 6, 7], 2] = float("inf")
    with pytest.raises(FloatingPointError, match=r"6 of 8 boxes .* \(rows 1, 3, 4, 5, 6, \.\.\.; row 1 is "
                                                 r"\[0.0, 0.0, inf, 0.0\]\); clip needs finite boxes"):
        Boxes(boxes).clip((5, 5))


def test_pairwise_iou():
    a = Boxes([[0, 0, 2, 2], [0, 0, 1, 1]])
    b = Boxes([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    iou = pairwise_iou(a, b)
    # overlap 1 of union 4 + 4 - 1 = 7; identical; disjoint / inside (area 1 of 4)
    expected = torch.tensor([[1 / 7, 1.0, 0.0], [0.0, 0.25, 0.0]])
    assert torch.allclose(iou, expected)
