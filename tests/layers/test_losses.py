import pytest
import torch

from framework.layers.losses import ciou_loss, diou_loss, giou_loss, smooth_l1_loss


def test_smooth_l1_quadratic_below_beta_linear_above():
    x = torch.tensor([0.5, 2.0])
    # 0.5 * 0.5^2 / 1 + (2 - 0.5 * 1)
    assert smooth_l1_loss(x, torch.zeros(2), beta=1.0, reduction="sum").item() == pytest.approx(1.625)
    # beta 0 is plain L1
    assert smooth_l1_loss(x, torch.zeros(2), beta=0.0, reduction="sum").item() == pytest.approx(2.5)


def test_giou_of_disjoint_boxes():
    # IoU 0, union 2, enclosing box [0, 0, 3, 1] of area 3: GIoU = -1/3, loss 4/3
    loss = giou_loss(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]), reduction="sum")
    assert loss.item() == pytest.approx(4 / 3, rel=1e-5)


def test_diou_and_ciou():
    a, b = torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    # IoU = 2 / 6; centre distance^2 = 1; enclosing [0, 0, 3, 2] diagonal^2 = 13
    expected = 1 - 1 / 3 + 1 / 13
    assert diou_loss(a, b, reduction="sum").item() == pytest.approx(expected, rel=1e-5)
    # same aspect ratio: the CIoU penalty v is 0
    assert ciou_loss(a, b, reduction="sum").item() == pytest.approx(expected, rel=1e-5)
    assert diou_loss(a, a).tolist() == pytest.approx([0.0], abs=1e-6)
