"""RPN and StandardRPNHead on one 2x2 (or 2x3) feature level with hand-computed labels and losses."""

import math

import pytest
import torch
from torch import nn

from framework.layers import ShapeSpec
from framework.modeling.proposal_generator import RPN, StandardRPNHead
from framework.registry import PROPOSAL_GENERATORS
from framework.structures import Boxes, ImageList, Instances

LN2 = math.log(2.0)


def _rpn(aspect_ratios=(1.0,), **knobs):
    """RPN on one level "p2" of stride 16 with 4 channels and anchors of size 32."""
    spec = {
        "name": "RPN",
        "in_features": ["p2"],
        "anchor_generator": {"name": "DefaultAnchorGenerator", "sizes": [[32]], "aspect_ratios": [list(aspect_ratios)]},
        **knobs,
    }
    return PROPOSAL_GENERATORS.build(spec, input_shape={"p2": ShapeSpec(channels=4, stride=16)})


def _gt(*boxes, size=(32, 32)):
    return Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)))


# The 4 anchors of a 2x2 map, stride 16, size 32, ratio 1, offset 0, in (y, x) order:
#   a0 (x=0,  y=0):  [-16, -16, 16, 16]
#   a1 (x=16, y=0):  [  0, -16, 32, 16]
#   a2 (x=0,  y=16): [-16,   0, 16, 32]
#   a3 (x=16, y=16): [  0,   0, 32, 32]
ANCHORS = torch.tensor([[-16.0, -16, 16, 16], [0.0, -16, 32, 16], [-16.0, 0, 16, 32], [0.0, 0, 32, 32]])


def _anchors(rpn):
    anchors = rpn.anchor_generator([torch.zeros(1, 4, 2, 2)])
    torch.testing.assert_close(anchors[0].tensor, ANCHORS)
    return anchors


# ---------------------------------------------------------------------------- head
def test_standard_rpn_head_shapes_and_names():
    head = StandardRPNHead([ShapeSpec(channels=8, stride=4), ShapeSpec(channels=8, stride=8)], num_anchors=3)
    logits, deltas = head([torch.randn(2, 8, 6, 5), torch.randn(2, 8, 3, 3)])
    assert [tuple(x.shape) for x in logits] == [(2, 3, 6, 5), (2, 3, 3, 3)]
    assert [tuple(x.shape) for x in deltas] == [(2, 12, 6, 5), (2, 12, 3, 3)]
    # detectron2 checkpoint names: a single hidden conv "conv" keeping the channels
    assert set(head.state_dict()) == {
        "conv.weight", "conv.bias", "objectness_logits.weight", "objectness_logits.bias",
        "anchor_deltas.weight", "anchor_deltas.bias",
    }
    assert head.conv.weight.shape == (8, 8, 3, 3)
    assert float(head.objectness_logits.bias.detach().abs().sum()) == 0.0


def test_standard_rpn_head_several_convs_and_channel_check():
    head = StandardRPNHead([ShapeSpec(channels=8)], num_anchors=1, conv_dims=(16, -1))
    assert head.conv.conv0.weight.shape == (16, 8, 3, 3) and head.conv.conv1.weight.shape == (16, 16, 3, 3)
    with pytest.raises(ValueError, match="same channels"):
        StandardRPNHead([ShapeSpec(channels=8), ShapeSpec(channels=4)], num_anchors=1)


def test_rpn_rejects_unknown_in_features():
    with pytest.raises(ValueError, match="p7"):
        RPN({"p2": ShapeSpec(channels=4, stride=4)}, in_features=["p7"])


class _FixedHead(nn.Module):
    """Returns preset (N, A, H, W) logits and (N, A*4, H, W) deltas whatever the features."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, features):
        return [self.logits], [self.deltas]


def test_flatten_order_matches_anchor_order_y_x_a():
    # 3 anchors (ratios 0.5, 1, 2) on a 2x3 map. Logit of (a, y, x) = 100*y + 10*x + a, and the dx of
    # (a, y, x) = the same code / 1000; decoding must pair each logit/delta with anchor index (y*W + x)*A + a.
    rpn = _rpn(aspect_ratios=(0.5, 1.0, 2.0), nms_thresh=1.0, post_nms_topk_test=100, pre_nms_topk_test=100)
    A, H, W = 3, 2, 3
    code = torch.zeros(1, A, H, W)
    for a in range(A):
        for y in range(H):
            for x in range(W):
                code[0, a, y, x] = 100 * y + 10 * x + a
    deltas = torch.zeros(1, A, 4, H, W)
    deltas[:, :, 0] = code / 1000.0  # dx only
    rpn.rpn_head = _FixedHead(code, deltas.view(1, A * 4, H, W))
    rpn.eval()
    image_size = (1000, 1000)
    (props,), losses = rpn(ImageList(torch.zeros(1, 3, 32, 48), [image_size]), {"p2": torch.zeros(1, 4, H, W)})
    assert losses == {}
    anchors = rpn.anchor_generator([torch.zeros(1, 4, H, W)])[0].tensor  # (H*W*A, 4), (y, x, a) order
    for logit, box in zip(props.objectness_logits.tolist(), props.proposal_boxes.tensor):
        y, x, a = int(logit) // 100, int(logit) // 10 % 10, int(logit) % 10
        anchor = anchors[(y * W + x) * A + a]
        # decoded with weights 1: x shifted by dx * anchor width, then clipped to the image
        shift = logit / 1000.0 * float(anchor[2] - anchor[0])
        expected = (anchor + torch.tensor([shift, 0.0, shift, 0.0])).clamp(min=0, max=1000)
        torch.testing.assert_close(box, expected)
    assert len(props) == H * W * A  # nothing dropped: no box is empty after clipping


# ---------------------------------------------------------------------------- labels
def test_label_and_sample_anchors_thresholds():
    rpn = _rpn()
    anchors = _anchors(rpn)
    # gt [0, 0, 32, 32]: IoU with a3 = 1 -> 1;
    # a0: inter 16*16 = 256, union 1024 + 1024 - 256 = 1792 -> 0.143 < 0.3 -> 0;
    # a1, a2: inter 32*16 = 512, union 2048 - 512 = 1536 -> 1/3 in [0.3, 0.7) -> -1 (ignored)
    labels, matched = rpn.label_and_sample_anchors(anchors, [_gt([0.0, 0, 32, 32])])
    assert labels[0].tolist() == [0, -1, -1, 1]
    torch.testing.assert_close(matched[0], torch.tensor([[0.0, 0, 32, 32]] * 4))


def test_label_and_sample_anchors_low_quality_matches():
    rpn = _rpn()
    anchors = _anchors(rpn)
    # gt [0, 0, 24, 16] (area 384): a0: inter 256, union 384 + 1024 - 256 = 1152 -> 0.222 -> 0;
    # a1: inter 24*16 = 384, union 1024 -> 0.375 -> ignored by thresholds, but it is the gt's best
    # (tied with a3: inter 384, union 1024 -> 0.375) -> both become 1; a2: 256 / 1152 = 0.222 -> 0
    labels, _ = rpn.label_and_sample_anchors(anchors, [_gt([0.0, 0, 24, 16])])
    assert labels[0].tolist() == [0, 1, 0, 1]


def test_label_and_sample_anchors_two_gts_pick_best_gt():
    rpn = _rpn()
    anchors = _anchors(rpn)
    # gt0 = a3's box exactly; gt1 = [-16, -16, 8, 8] (24x24 = 576):
    #   IoU(gt1, a0) = 576 / 1024 = 0.5625 (ignored band), a1/a2: inter 8*24 = 192, union 576 + 1024 - 192
    #   = 1408 -> 0.136; a3: inter 64, union 1536 -> 0.042. So a0 is gt1's best -> promoted to 1,
    #   matched to gt1 (IoU(gt0, a0) = 0.143 < 0.5625).
    # a3: IoU 1 with gt0 -> 1; a1/a2: best is gt0 with 1/3 -> -1
    labels, matched = rpn.label_and_sample_anchors(anchors, [_gt([0.0, 0, 32, 32], [-16.0, -16, 8, 8])])
    assert labels[0].tolist() == [1, -1, -1, 1]
    torch.testing.assert_close(matched[0], torch.tensor([[-16.0, -16, 8, 8]] + [[0.0, 0, 32, 32]] * 3))


def test_label_and_sample_anchors_without_gt_all_background():
    rpn = _rpn()
    labels, matched = rpn.label_and_sample_anchors(_anchors(rpn), [_gt()])
    assert labels[0].tolist() == [0, 0, 0, 0]
    assert matched[0].shape == (4, 4) and float(matched[0].abs().sum()) == 0.0


def test_label_and_sample_anchors_subsampling_caps():
    # labels before sampling [0, 1, 0, 1]; 2 samples at fraction 0.5 -> 1 positive and 1 negative
    torch.manual_seed(0)
    rpn = _rpn(batch_size_per_image=2, positive_fraction=0.5)
    labels, _ = rpn.label_and_sample_anchors(_anchors(rpn), [_gt([0.0, 0, 24, 16])])
    lab = labels[0]
    assert (lab == 1).sum() == 1 and (lab == 0).sum() == 1 and (lab == -1).sum() == 2
    assert (lab == 1).nonzero()[0].item() in (1, 3) and (lab == 0).nonzero()[0].item() in (0, 2)
    # fraction 0.25 -> int(2 * 0.25) = 0 positives; negatives fill both slots
    rpn = _rpn(batch_size_per_image=2, positive_fraction=0.25)
    labels, _ = rpn.label_and_sample_anchors(_anchors(rpn), [_gt([0.0, 0, 24, 16])])
    assert labels[0].tolist() == [0, -1, 0, -1]


def test_anchor_boundary_thresh_ignores_anchors_outside_the_image():
    # inside means x0 >= -t, y0 >= -t, x1 < w + t, y1 < h + t (detectron2): a0..a2 start at -16 -> outside
    # for t = 0 or 1; a3 = [0, 0, 32, 32] in a 32x32 image is inside for t = 1 (32 < 33) but not t = 0
    rpn = _rpn(anchor_boundary_thresh=1)
    labels, _ = rpn.label_and_sample_anchors(_anchors(rpn), [_gt([0.0, 0, 32, 32])])
    assert labels[0].tolist() == [-1, -1, -1, 1]
    rpn = _rpn(anchor_boundary_thresh=0)
    labels, _ = rpn.label_and_sample_anchors(_anchors(rpn), [_gt([0.0, 0, 32, 32])])
    assert labels[0].tolist() == [-1, -1, -1, -1]


# ---------------------------------------------------------------------------- losses
def _zero_head(rpn):
    for p in rpn.rpn_head.parameters():
        nn.init.zeros_(p)


def test_losses_normalised_by_batch_size_per_image_times_images():
    rpn = _rpn()
    _zero_head(rpn)  # logits 0 -> BCE = ln 2 per sampled anchor; deltas 0 -> L1 = sum |gt deltas|
    rpn.train()
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (32, 32)])
    feats = {"p2": torch.randn(2, 4, 2, 2)}
    # image 0: gt [0, 0, 24, 16] -> labels [0, 1, 0, 1] (4 sampled); positives a1, a3.
    #   a1 = (cx 16, cy 0, w 32, h 32) -> gt (cx 12, cy 8, w 24, h 16):
    #     dx = (12 - 16) / 32 = -0.125, dy = (8 - 0) / 32 = 0.25, dw = ln(24/32), dh = ln(16/32)
    #   a3 = (cx 16, cy 16): dx = -0.125, dy = (8 - 16) / 32 = -0.25, same dw, dh
    # image 1: gt [0, 0, 32, 32] -> labels [0, -1, -1, 1] (2 sampled); a3 matches exactly: deltas 0
    gts = [_gt([0.0, 0, 24, 16]), _gt([0.0, 0, 32, 32])]
    _, losses = rpn(images, feats, gts)
    per_pos = 0.125 + 0.25 + abs(math.log(0.75)) + abs(math.log(0.5))  # 1.355829
    normalizer = 256 * 2
    assert losses["loss_rpn_cls"].item() == pytest.approx((4 + 2) * LN2 / normalizer, rel=1e-6)
    assert losses["loss_rpn_loc"].item() == pytest.approx(2 * per_pos / normalizer, rel=1e-6)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    sum(losses.values()).backward()
    assert rpn.rpn_head.objectness_logits.bias.grad is not None


def test_loss_weights_and_smooth_l1_beta():
    rpn = _rpn(loss_weight_cls=2.0, loss_weight_loc=0.5, smooth_l1_beta=1.0)
    _zero_head(rpn)
    rpn.train()
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    _, losses = rpn(images, {"p2": torch.zeros(1, 4, 2, 2)}, [_gt([0.0, 0, 24, 16])])
    # smooth L1 with beta 1 on |d| < 1: 0.5 d^2 / beta; per positive anchor
    d = [0.125, 0.25, math.log(0.75), math.log(0.5)]
    per_pos = sum(0.5 * x * x for x in d)
    assert losses["loss_rpn_loc"].item() == pytest.approx(0.5 * 2 * per_pos / 256, rel=1e-5)
    assert losses["loss_rpn_cls"].item() == pytest.approx(2.0 * 4 * LN2 / 256, rel=1e-6)


def test_training_needs_gt_and_returns_proposals_with_topk():
    rpn = _rpn(post_nms_topk_train=2, nms_thresh=1.0)
    rpn.train()
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    with pytest.raises(ValueError, match="gt_instances"):
        rpn(images, {"p2": torch.zeros(1, 4, 2, 2)})
    (props,), _ = rpn(images, {"p2": torch.randn(1, 4, 2, 2)}, [_gt([0.0, 0, 32, 32])])
    assert len(props) == 2 and not props.objectness_logits.requires_grad
    assert props.image_size == (32, 32)


def test_non_finite_proposals_are_named_by_feature_at_inference_and_raise_in_training(caplog):
    # 2x2 map, one anchor per location: the logit of anchor (y=0, x=1) is NaN.
    logits = torch.tensor([[[[2.0, float("nan")], [1.0, 0.5]]]])
    rpn = _rpn(nms_thresh=1.0)
    rpn.rpn_head = _FixedHead(logits, torch.zeros(1, 4, 2, 2))
    images, features = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)]), {"p2": torch.zeros(1, 4, 2, 2)}
    rpn.eval()
    with caplog.at_level("WARNING"):
        (props,), _ = rpn(images, features)
    assert len(props) == 3
    assert "image 0 (32x32): 1 of 4 (p2: 1 of 4)" in caplog.text
    rpn.train()
    with pytest.raises(FloatingPointError, match=r"image 0 \(32x32\): 1 of 4 \(p2: 1 of 4\)"):
        rpn(images, features, [_gt([0.0, 0, 32, 32])])
