import math

import pytest
import torch

from framework.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from framework.structures.boxes import Boxes


def test_known_delta_with_weights_10_10_5_5():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # w 10, h 20, centre (5, 10)
    tgt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # w 20, h 20, centre (12, 14)
    # dx = 10 * 7 / 10, dy = 10 * 4 / 20, dw = 5 * ln(20 / 10), dh = 5 * ln(1)
    expected = torch.tensor([[7.0, 2.0, 5 * math.log(2.0), 0.0]])
    deltas = t.get_deltas(src, tgt)
    torch.testing.assert_close(deltas, expected)
    torch.testing.assert_close(t.apply_deltas(expected, src), tgt)


def test_width_has_no_plus_one():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    d = t.get_deltas(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 20.0, 10.0]]))
    # centre x moves 5 -> 10 over width 10 (not 11); dw = ln 2 (not ln(21 / 11))
    torch.testing.assert_close(d, torch.tensor([[0.5, 0.0, math.log(2.0), 0.0]]))


def test_round_trip_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    src = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 50], dim=1)
    xy = torch.rand(50, 2, generator=g) * 100
    tgt = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 50], dim=1)
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(t.apply_deltas(t.get_deltas(src, tgt), src), tgt, rtol=1e-5, atol=1e-3)


def test_apply_class_specific_deltas_keeps_row_layout():
    t = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 7.0, 2.0, 5 * math.log(2.0), 0.0]])  # k = 2 classes
    out = t.apply_deltas(deltas, src)
    assert out.shape == (1, 8)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 10.0, 20.0, 2.0, 4.0, 22.0, 24.0]]))


def test_dw_dh_clamped_at_scale_clamp():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))  # default clamp log(1000 / 16)
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 10.0, 0.0]]), box)
    # width 16 * 1000 / 16 = 1000 around centre x = 8; height unchanged
    torch.testing.assert_close(out, torch.tensor([[-492.0, 0.0, 508.0, 16.0]]))

    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0))
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), box)
    torch.testing.assert_close(out, torch.tensor([[-8.0, -8.0, 24.0, 24.0]]))
    # the clamp is an upper bound only: large negative dw shrinks freely
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, -math.log(4.0), 0.0]]), box)
    torch.testing.assert_close(out, torch.tensor([[6.0, 0.0, 10.0, 16.0]]))


def test_apply_deltas_decodes_in_float32():
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    out = t.apply_deltas(torch.zeros(1, 4, dtype=torch.float16), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert out.dtype == torch.float32


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"Box2BoxTransform\(weights=\(1.0, 1.0, 1.0\)\): needs 4 weights "
                                         r"\(wx, wy, ww, wh\), got 3"):
        Box2BoxTransform(weights=(1.0, 1.0, 1.0))
    t = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    good = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match=r"1 of 2 src_boxes have a non-positive width or height, e.g. row 1: "
                                         r"\[5.0, 0.0, 5.0, 10.0\]; every source box needs x1 > x0 and y1 > y0"):
        t.get_deltas(torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 5.0, 10.0]]), good)
    # a zero height gave infinite deltas before; it is refused like a zero width
    with pytest.raises(ValueError, match=r"2 of 2 src_boxes .* row 0: \[0.0, 3.0, 5.0, 3.0\]"):
        t.get_deltas(torch.tensor([[0.0, 3.0, 5.0, 3.0], [0.0, 0.0, 5.0, -1.0]]), good)
    with pytest.raises(TypeError, match=r"get_deltas\(src_boxes, target_boxes\) takes two \(N, 4\) tensors, got "
                                        r"src_boxes: Boxes, target_boxes: Tensor \(for a Boxes pass boxes.tensor\)"):
        t.get_deltas(Boxes(good), good)
    with pytest.raises(ValueError, match=r"src_boxes and target_boxes must both be \(N, 4\), one target per source "
                                         r"box, got \(2, 4\) and \(1, 4\)"):
        t.get_deltas(good, good[:1])


# ---------------------------------------------------------------- dense loss
# Two anchors, one image: a0 = [0, 0, 10, 10], a1 = [10, 0, 20, 10]; gt for a1 is shifted 2 px right,
# so its target dx = (17 - 15) / 10 = 0.2. The prediction for a0 is dx = 0.1, everything else 0.
_ANCHORS = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]])
_GT = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [12.0, 0.0, 22.0, 10.0]])]
_PRED = torch.tensor([[[0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # (N=1, R=2, 4)
_T = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))


def test_dense_smooth_l1_is_summed_l1_at_beta_0():
    fg = torch.tensor([[True, True]])
    loss = _dense_box_regression_loss([Boxes(_ANCHORS)], _T, [_PRED], _GT, fg, "smooth_l1", 0.0)
    torch.testing.assert_close(loss, torch.tensor(0.3))  # |0.1 - 0| + |0 - 0.2|
    fg = torch.tensor([[True, False]])
    loss = _dense_box_regression_loss([Boxes(_ANCHORS)], _T, [_PRED], _GT, fg, "smooth_l1", 0.0)
    torch.testing.assert_close(loss, torch.tensor(0.1))


def test_dense_smooth_l1_beta_and_levels_concatenate_in_order():
    # anchors split over two levels; beta 0.5: 0.5 * x^2 / beta -> 0.01 + 0.04
    fg = torch.tensor([[True, True]])
    loss = _dense_box_regression_loss(
        [Boxes(_ANCHORS[:1]), Boxes(_ANCHORS[1:])], _T, [_PRED[:, :1], _PRED[:, 1:]], _GT, fg, "smooth_l1", 0.5
    )
    torch.testing.assert_close(loss, torch.tensor(0.05))


def test_dense_iou_losses_on_decoded_boxes():
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]  # plain tensors are accepted too
    pred = [torch.zeros(1, 1, 4)]  # decodes to the anchor itself
    gt = [torch.tensor([[0.0, 0.0, 10.0, 20.0]])]  # IoU 0.5, enclosing box = union
    fg = torch.tensor([[True]])
    giou = _dense_box_regression_loss(anchors, _T, pred, gt, fg, "giou")
    torch.testing.assert_close(giou, torch.tensor(0.5))
    # DIoU: centres (5, 5) vs (5, 10): d^2 = 25; enclosing diagonal^2 = 10^2 + 20^2 = 500
    diou = _dense_box_regression_loss(anchors, _T, pred, gt, fg, "diou")
    torch.testing.assert_close(diou, torch.tensor(0.55))
    v = 4 / math.pi**2 * (math.atan(10 / 20) - math.atan(1.0)) ** 2
    ciou = _dense_box_regression_loss(anchors, _T, pred, gt, fg, "ciou")
    torch.testing.assert_close(ciou, torch.tensor(0.55 + v / (0.5 + v) * v))
    assert _dense_box_regression_loss(anchors, _T, pred, gt, torch.tensor([[False]]), "giou").item() == 0.0


def test_dense_unknown_loss_type():
    with pytest.raises(ValueError, match=r"dense_box_regression_loss: unknown box_reg_loss_type 'l2'; valid: "
                                         r"'smooth_l1', 'giou', 'diou', 'ciou'"):
        _dense_box_regression_loss([Boxes(_ANCHORS)], _T, [_PRED], _GT, torch.tensor([[True, True]]), "l2")
    with pytest.raises(ValueError, match=r"unknown box_reg_loss_type 'gio'.*Did you mean 'giou'"):
        _dense_box_regression_loss([Boxes(_ANCHORS)], _T, [_PRED], _GT, torch.tensor([[True, True]]), "gio")
