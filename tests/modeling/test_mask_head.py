"""mask_rcnn_loss / mask_rcnn_inference with hand-set logits, and the MaskRCNNConvUpsampleHead."""

import math

import pytest
import torch

from framework.layers import ShapeSpec
from framework.modeling.roi_heads import MaskRCNNConvUpsampleHead, mask_rcnn_inference, mask_rcnn_loss
from framework.registry import MASK_HEADS
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks

SOFTPLUS_M10 = math.log1p(math.exp(-10.0))  # BCE of logit +10 vs target 1 = of -10 vs 0 = 4.53989e-05
# PyTorch evaluates it in float32 as log(1 + e^-10), and 1 + 4.54e-5 rounds to a multiple of 2^-23 ~ 1.2e-7,
# i.e. ~0.4 % off; any wrong pixel would cost ~10 / 784 = 1.3e-2, 300x more than the expected loss.
F32_REL = 1e-2


def _left_half_logits(num_classes, channel, m=28):
    """(1, K, M, M): channel ``channel`` is +10 on the left half and -10 on the right; others are -10."""
    logits = torch.full((1, num_classes, m, m), -10.0)
    logits[0, channel, :, : m // 2] = 10.0
    return logits


def _polygon_instance(gt_class):
    # proposal box [10, 20, 66, 76] (56 x 56); the gt polygon covers its left half x in [10, 38]:
    # rasterised in the box at scale 28 / 56 = 0.5 it spans columns 0..13 of the 28x28 target
    return Instances(
        (100, 100),
        proposal_boxes=Boxes(torch.tensor([[10.0, 20.0, 66.0, 76.0]])),
        gt_classes=torch.tensor([gt_class]),
        gt_masks=PolygonMasks([[[10.0, 20.0, 38.0, 20.0, 38.0, 76.0, 10.0, 76.0]]]),
    )


def test_loss_left_half_polygon_is_softplus_minus_10():
    # every pixel: logit +10 on target 1 or -10 on target 0 -> softplus(-10) each; the mean is the same
    logits = _left_half_logits(3, channel=1)
    loss = mask_rcnn_loss(logits, [_polygon_instance(gt_class=1)])
    assert loss.item() == pytest.approx(SOFTPLUS_M10, rel=F32_REL)


def test_loss_picks_the_gt_class_channel():
    # the good channel is 1 but the gt class is 2: channel 2 is -10 everywhere, so the left half
    # (14 * 28 pixels of target 1) costs softplus(10) = 10 + softplus(-10) each, the right half softplus(-10):
    # mean = (392 * (10 + s) + 392 * s) / 784 = 5 + s
    logits = _left_half_logits(3, channel=1)
    loss = mask_rcnn_loss(logits, [_polygon_instance(gt_class=2)])
    assert loss.item() == pytest.approx(5.0 + SOFTPLUS_M10, rel=1e-5)


def test_loss_class_agnostic_uses_channel_0():
    logits = _left_half_logits(1, channel=0)
    inst = _polygon_instance(gt_class=2)  # the class is irrelevant for a class-agnostic head
    assert mask_rcnn_loss(logits, [inst]).item() == pytest.approx(SOFTPLUS_M10, rel=F32_REL)


def test_loss_with_bitmasks_over_two_images():
    # image 0: polygon case (loss s per pixel); image 1: BitMask all ones inside the box, logits 0
    # -> ln 2 per pixel. Mean over both RoIs' 2 * 784 pixels = (s + ln 2) / 2
    full = torch.zeros(1, 50, 50, dtype=torch.bool)
    full[0, 10:30, 10:30] = True
    inst1 = Instances(
        (50, 50), proposal_boxes=Boxes(torch.tensor([[10.0, 10, 30, 30]])), gt_classes=torch.tensor([0]),
        gt_masks=BitMasks(full),
    )
    logits = torch.cat([_left_half_logits(3, channel=1), torch.zeros(1, 3, 28, 28)])
    loss = mask_rcnn_loss(logits, [_polygon_instance(gt_class=1), inst1])
    assert loss.item() == pytest.approx((SOFTPLUS_M10 + math.log(2)) / 2, rel=1e-4)


def test_loss_without_foreground_is_zero_and_connected():
    logits = torch.randn(0, 3, 28, 28, requires_grad=True)
    empty = Instances((10, 10), proposal_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    loss = mask_rcnn_loss(logits, [empty, empty])
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == (0, 3, 28, 28)


def test_loss_rejects_non_square_masks():
    with pytest.raises(ValueError, match="square"):
        mask_rcnn_loss(torch.zeros(1, 3, 28, 14), [_polygon_instance(0)])


def test_inference_picks_the_predicted_class_and_applies_sigmoid():
    logits = torch.zeros(3, 2, 2, 2)
    logits[0, 1] = torch.tensor([[0.0, 2.0], [-2.0, 1.0]])
    logits[1, 0] = 3.0
    logits[2, 1] = -1.0
    inst0 = Instances((10, 10), pred_classes=torch.tensor([1, 0]))
    inst1 = Instances((10, 10), pred_classes=torch.tensor([1]))
    mask_rcnn_inference(logits, [inst0, inst1])
    assert inst0.pred_masks.shape == (2, 1, 2, 2) and inst1.pred_masks.shape == (1, 1, 2, 2)
    torch.testing.assert_close(inst0.pred_masks[0, 0], torch.sigmoid(torch.tensor([[0.0, 2.0], [-2.0, 1.0]])))
    torch.testing.assert_close(inst0.pred_masks[1, 0], torch.full((2, 2), 1 / (1 + math.exp(-3.0))))
    torch.testing.assert_close(inst1.pred_masks[0, 0], torch.full((2, 2), 1 / (1 + math.exp(1.0))))


def test_inference_class_agnostic():
    logits = torch.zeros(1, 1, 2, 2)
    inst = Instances((10, 10), pred_classes=torch.tensor([5]))
    mask_rcnn_inference(logits, [inst])
    torch.testing.assert_close(inst.pred_masks, torch.full((1, 1, 2, 2), 0.5))


def test_inference_with_no_detections():
    inst = Instances((10, 10), pred_classes=torch.zeros(0, dtype=torch.int64))
    mask_rcnn_inference(torch.zeros(0, 3, 28, 28), [inst])
    assert inst.pred_masks.shape == (0, 1, 28, 28)


# ---------------------------------------------------------------------------- head
def test_conv_upsample_head_shapes_and_names():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=8, height=14, width=14), num_classes=5, num_conv=2, conv_dim=4)
    assert head.layers(torch.randn(3, 8, 14, 14)).shape == (3, 5, 28, 28)
    # detectron2 checkpoint names
    assert sorted(k.rsplit(".", 1)[0] for k in head.state_dict() if k.endswith("weight")) == [
        "deconv", "mask_fcn1", "mask_fcn2", "predictor"
    ]
    agnostic = MASK_HEADS.build(
        {"name": "MaskRCNNConvUpsampleHead", "cls_agnostic_mask": True, "num_conv": 0, "conv_dim": 4},
        input_shape=ShapeSpec(channels=8, height=14, width=14), num_classes=5,
    )
    assert agnostic.layers(torch.randn(2, 8, 14, 14)).shape == (2, 1, 28, 28)


def test_head_forward_training_loss_weight_and_inference():
    head = MaskRCNNConvUpsampleHead(ShapeSpec(channels=2), num_classes=3, num_conv=0, conv_dim=2, loss_weight=2.0)
    for p in head.parameters():
        torch.nn.init.zeros_(p)  # logits exactly 0 -> BCE ln 2 per pixel whatever the target
    head.train()
    out = head(torch.randn(1, 2, 14, 14), [_polygon_instance(gt_class=0)])
    assert set(out) == {"loss_mask"}
    assert out["loss_mask"].item() == pytest.approx(2.0 * math.log(2), rel=1e-6)
    head.eval()
    inst = Instances((100, 100), pred_classes=torch.tensor([2]))
    (res,) = head(torch.randn(1, 2, 14, 14), [inst])
    torch.testing.assert_close(res.pred_masks, torch.full((1, 1, 28, 28), 0.5))
