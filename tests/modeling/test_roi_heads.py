"""StandardROIHeads: proposal labelling / sampling by hand, and the training / inference plumbing."""

import math

import pytest
import torch

from framework.layers import ShapeSpec
from framework.modeling.roi_heads import StandardROIHeads, select_foreground_proposals
from framework.registry import ROI_HEADS
from framework.structures import BitMasks, Boxes, ImageList, Instances

K = 3  # foreground classes; background label = 3
GT_LOGIT = math.log(1e10)  # ~23.0259, the objectness given to appended gt boxes


def _heads(**knobs):
    spec = {
        "name": "StandardROIHeads",
        "num_classes": K,
        "in_features": ["p2"],
        "box_head": {"name": "FastRCNNConvFCHead", "fc_dim": 8},
        **knobs,
    }
    return ROI_HEADS.build(spec, input_shape={"p2": ShapeSpec(channels=4, stride=4)})


def _masks(n, size=(100, 100)):
    """n distinct masks: mask i has i + 1 pixels set (so the mask of a proposal tells its gt)."""
    m = torch.zeros(n, *size, dtype=torch.bool)
    for i in range(n):
        m[i, 0, : i + 1] = True
    return BitMasks(m)


def _targets():
    return Instances(
        (100, 100),
        gt_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 70, 70]])),
        gt_classes=torch.tensor([2, 0]),
        gt_masks=_masks(2),
    )


# Proposals and their IoU with the gts (threshold 0.5, inclusive):
#   p0 [0, 0, 10, 10]     IoU(gt0) = 1                       -> class 2
#   p1 [0, 0, 10, 20]     IoU(gt0) = 100 / 200 = 0.5         -> class 2 (>= 0.5)
#   p2 [0, 0, 10, 21]     IoU(gt0) = 100 / 210 = 0.476       -> background 3
#   p3 [50, 50, 70, 80]   IoU(gt1) = 400 / 600 = 0.667       -> class 0
#   p4 [90, 90, 100, 100] IoU 0                               -> background 3
# plus the appended gts: gt0 -> class 2, gt1 -> class 0. 5 foreground, 2 background.
PROPOSAL_BOXES = [[0.0, 0, 10, 10], [0.0, 0, 10, 20], [0.0, 0, 10, 21], [50.0, 50, 70, 80], [90.0, 90, 100, 100]]
EXPECTED = {  # box -> (class, matched gt index or None)
    (0.0, 0, 10, 10): (2, 0),  # p0 and appended gt0 (same box)
    (0.0, 0, 10, 20): (2, 0),
    (0.0, 0, 10, 21): (3, None),
    (50.0, 50, 70, 80): (0, 1),
    (90.0, 90, 100, 100): (3, None),
    (50.0, 50, 70, 70): (0, 1),
}


def _proposals(boxes=PROPOSAL_BOXES):
    return Instances(
        (100, 100),
        proposal_boxes=Boxes(torch.tensor(boxes)),
        objectness_logits=torch.arange(len(boxes), dtype=torch.float32),
    )


def test_label_and_sample_proposals_labels_and_gt_fields():
    heads = _heads()
    (out,) = heads.label_and_sample_proposals([_proposals()], [_targets()])
    assert len(out) == 7
    gt = _targets()
    classes = out.gt_classes.tolist()
    # foreground first, then background (detectron2 concatenates fg then bg indices)
    assert all(c != K for c in classes[:5]) and classes[5:] == [K, K]
    seen_gt = 0
    for i in range(7):
        box = tuple(out.proposal_boxes.tensor[i].tolist())
        cls, gt_idx = EXPECTED[box]
        assert classes[i] == cls, box
        if gt_idx is not None:  # gt fields of the matched gt are copied
            torch.testing.assert_close(out.gt_boxes.tensor[i], gt.gt_boxes.tensor[gt_idx])
            assert out.gt_masks.tensor[i].sum().item() == gt_idx + 1
        seen_gt += int(out.objectness_logits[i].item() == pytest.approx(GT_LOGIT, abs=1e-4))
    assert seen_gt == 2  # both gts were appended as proposals
    assert isinstance(out.gt_masks, BitMasks) and len(out.gt_masks) == 7


def test_label_and_sample_proposals_without_append_gt():
    (out,) = _heads(proposal_append_gt=False).label_and_sample_proposals([_proposals()], [_targets()])
    assert sorted(out.gt_classes.tolist()) == [0, 2, 2, 3, 3]


def test_image_without_gt_gives_all_background_and_no_gt_boxes():
    empty = Instances(
        (100, 100),
        gt_boxes=Boxes(torch.zeros(0, 4)),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=BitMasks(torch.zeros(0, 100, 100, dtype=torch.bool)),
    )
    out_empty, out_full = _heads().label_and_sample_proposals([_proposals(), _proposals()], [empty, _targets()])
    assert out_empty.gt_classes.tolist() == [K] * 5
    # as detectron2: no gt to copy, so only gt_classes is set
    assert not out_empty.has("gt_boxes") and not out_empty.has("gt_masks")
    assert len(out_full) == 7 and out_full.has("gt_boxes")


@pytest.mark.parametrize(
    "batch_size, fraction, num_fg, num_bg",
    [
        (4, 0.5, 2, 2),  # int(4 * 0.5) = 2 fg of 5, then 2 bg
        (4, 0.25, 1, 2),  # int(4 * 0.25) = 1 fg; 3 bg slots but only 2 bg exist
        (6, 0.75, 4, 2),  # int(4.5) = 4 fg, 2 bg
        (512, 0.25, 5, 2),  # everything
    ],
)
def test_sampling_caps(batch_size, fraction, num_fg, num_bg):
    torch.manual_seed(0)
    heads = _heads(batch_size_per_image=batch_size, positive_fraction=fraction)
    (out,) = heads.label_and_sample_proposals([_proposals()], [_targets()])
    classes = out.gt_classes
    assert (classes != K).sum().item() == num_fg and (classes == K).sum().item() == num_bg


def test_iou_threshold_knob():
    # threshold 0.6: p1 (0.5) becomes background, p3 (0.667) stays class 0
    (out,) = _heads(iou_thresholds=[0.6], proposal_append_gt=False).label_and_sample_proposals(
        [_proposals()], [_targets()]
    )
    got = {tuple(b.tolist()): c for b, c in zip(out.proposal_boxes.tensor, out.gt_classes.tolist())}
    assert got[(0.0, 0, 10, 20)] == K and got[(50.0, 50, 70, 80)] == 0 and got[(0.0, 0, 10, 10)] == 2


def test_select_foreground_proposals():
    p = Instances((10, 10), gt_classes=torch.tensor([0, 3, -1, 2, 3]))
    (fg,) = select_foreground_proposals([p], bg_label=3)
    assert fg.gt_classes.tolist() == [0, 2]


# ---------------------------------------------------------------------------- forward plumbing
def _features(n=1):
    torch.manual_seed(0)
    return {"p2": torch.randn(n, 4, 25, 25)}


def test_training_forward_returns_box_and_mask_losses():
    heads = _heads(mask_head={"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 4})
    heads.train()
    images = ImageList(torch.zeros(1, 3, 100, 100), [(100, 100)])
    with pytest.raises(ValueError, match="targets"):
        heads(images, _features(), [_proposals()])
    out, losses = heads(images, _features(), [_proposals()], [_targets()])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    # at init: near-uniform softmax over K + 1 = 4 classes -> CE close to ln 4; mask logits ~0 -> BCE ~ln 2
    assert losses["loss_cls"].item() == pytest.approx(math.log(4), abs=0.1)
    assert losses["loss_mask"].item() == pytest.approx(math.log(2), abs=0.05)
    sum(losses.values()).backward()
    assert heads.box_predictor.cls_score.weight.grad is not None
    assert heads.mask_head.predictor.weight.grad is not None


def test_inference_forward_detections_with_masks():
    heads = _heads(
        mask_head={"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 4},
        box_predictor={"name": "FastRCNNOutputLayers", "test_score_thresh": 0.0, "test_detections_per_img": 4},
    )
    heads.eval()
    images = ImageList(torch.zeros(2, 3, 100, 100), [(100, 100), (100, 90)])
    # image 1: two disjoint RoIs (no NMS interplay) in a 100 x 90 image
    props = [_proposals(), _proposals(PROPOSAL_BOXES[3:])]
    props[1] = Instances((100, 90), **props[1].get_fields())
    with torch.no_grad():
        results, losses = heads(images, _features(2), props)
    assert losses == {}
    assert [len(r) for r in results] == [4, 4]  # >= 2 disjoint RoIs x 3 classes, capped at 4
    assert float(results[1].pred_boxes.tensor[:, 2].max()) <= 90.0
    for r, size in zip(results, [(100, 100), (100, 90)]):
        assert r.image_size == size
        assert set(r.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert r.pred_masks.shape == (4, 1, 28, 28)
        assert float(r.pred_masks.min()) >= 0.0 and float(r.pred_masks.max()) <= 1.0
        assert int(r.pred_classes.max()) < K


def test_channels_last_features_pool_in_nchw_and_run_the_mask_head_in_channels_last():
    heads = _heads(mask_head={"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 4},
                   box_predictor={"name": "FastRCNNOutputLayers", "test_score_thresh": 0.0,
                                  "test_detections_per_img": 4}).eval()
    images = ImageList(torch.zeros(1, 3, 100, 100), [(100, 100)])
    seen = []
    heads.mask_head.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    features = _features()
    with torch.no_grad():
        nchw, _ = heads(images, features, [_proposals()])
        nhwc, _ = heads(images, {k: v.contiguous(memory_format=torch.channels_last) for k, v in features.items()},
                        [_proposals()])
    assert seen[0].is_contiguous() and not seen[1].is_contiguous()
    assert seen[1].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(seen[0], seen[1])  # the same pooled values
    for a, b in zip(nchw, nhwc):
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.scores, b.scores)
        torch.testing.assert_close(a.pred_masks, b.pred_masks, rtol=1e-5, atol=1e-6)


def test_faster_rcnn_without_mask_head():
    heads = _heads()
    assert not heads.mask_on
    heads.train()
    images = ImageList(torch.zeros(1, 3, 100, 100), [(100, 100)])
    _, losses = heads(images, _features(), [_proposals()], [_targets()])
    assert set(losses) == {"loss_cls", "loss_box_reg"}


def test_unknown_in_features_is_a_clear_error():
    with pytest.raises(ValueError, match="p9"):
        _heads(in_features=["p9"])


def test_training_with_no_gt_anywhere_gives_zero_box_and_mask_losses():
    heads = _heads(mask_head={"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 4})
    heads.train()
    empty = Instances(
        (100, 100),
        gt_boxes=Boxes(torch.zeros(0, 4)),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=BitMasks(torch.zeros(0, 100, 100, dtype=torch.bool)),
    )
    images = ImageList(torch.zeros(2, 3, 100, 100), [(100, 100), (100, 100)])
    _, losses = heads(images, _features(2), [_proposals(), _proposals()], [empty, empty])
    # every RoI is background: no box regression, no mask target; both stay in the graph
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    assert losses["loss_box_reg"].requires_grad and losses["loss_mask"].requires_grad
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()
