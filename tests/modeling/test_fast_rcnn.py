"""FastRCNNOutputLayers (losses, predictions) and fast_rcnn_inference with hand-computed numbers."""

import math

import pytest
import torch

from framework.layers import ShapeSpec
from framework.modeling.roi_heads import FastRCNNOutputLayers, fast_rcnn_inference
from framework.structures import Boxes, Instances

def _predictor(num_classes=2, agnostic=False, **kw):
    shape = ShapeSpec(channels=8, height=2, width=2)
    return FastRCNNOutputLayers(shape, num_classes, cls_agnostic_bbox_reg=agnostic, **kw)


def test_layer_shapes_and_forward_flattens():
    p = _predictor(num_classes=3)
    assert p.cls_score.weight.shape == (4, 32) and p.bbox_pred.weight.shape == (12, 32)
    scores, deltas = p(torch.randn(5, 8, 2, 2))
    assert scores.shape == (5, 4) and deltas.shape == (5, 12)
    assert _predictor(num_classes=3, agnostic=True).bbox_pred.weight.shape == (4, 32)


def _three_rois():
    """K = 2. RoI0 gt class 0, RoI1 gt class 1, RoI2 background (class 2)."""
    return Instances(
        (100, 100),
        proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [30.0, 30, 40, 40]])),
        gt_classes=torch.tensor([0, 1, 2]),
        # RoI0's gt is its own box (target deltas 0); RoI1's gt is shifted right by 1 px:
        # dx = 10 * (6 - 5) / 10 = 1.0, dy = dw = dh = 0; RoI2's "gt" is unused
        gt_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [0.0, 0, 1, 1]])),
    )


def _three_predictions():
    scores = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # target 0: p = 1/3 -> CE ln 3
            [0.0, math.log(2.0), 0.0],  # target 1: p = 2 / (1 + 2 + 1) = 1/2 -> CE ln 2
            [0.0, 0.0, math.log(2.0)],  # target 2 (bg): p = 1/2 -> CE ln 2
        ],
        requires_grad=True,
    )
    deltas = torch.tensor(
        [
            [0.1, -0.2, 0.3, 0.4, 5.0, 5.0, 5.0, 5.0],  # class 0 counts: |0.1|+|-0.2|+|0.3|+|0.4| = 1.0
            [9.0, 9.0, 9.0, 9.0, 0.5, 0.0, 0.0, 0.0],  # class 1 counts: |0.5 - 1| = 0.5
            [7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0],  # background: no box loss
        ],
        requires_grad=True,
    )
    return scores, deltas


def test_losses_cross_entropy_mean_and_class_specific_box_loss():
    scores, deltas = _three_predictions()
    losses = _predictor().losses((scores, deltas), [_three_rois()])
    assert losses["loss_cls"].item() == pytest.approx((math.log(3) + 2 * math.log(2)) / 3, rel=1e-6)
    # (1.0 + 0.5) summed over foreground, divided by the number of RoIs (3), not of foreground RoIs (2)
    assert losses["loss_box_reg"].item() == pytest.approx(1.5 / 3, rel=1e-6)
    losses["loss_box_reg"].backward()
    # only the gt class's deltas of foreground RoIs receive gradient: sign(pred - target) / 3
    expected = torch.zeros(3, 8)
    expected[0, :4] = torch.tensor([1.0, -1.0, 1.0, 1.0]) / 3
    expected[1, 4] = -1.0 / 3
    torch.testing.assert_close(deltas.grad, expected)


def test_losses_split_over_images_and_loss_weights():
    scores, deltas = _three_predictions()
    rois = _three_rois()
    losses = _predictor(loss_weight_cls=2.0, loss_weight_box_reg=3.0).losses((scores, deltas), [rois[:1], rois[1:]])
    assert losses["loss_cls"].item() == pytest.approx(2.0 * (math.log(3) + 2 * math.log(2)) / 3, rel=1e-6)
    assert losses["loss_box_reg"].item() == pytest.approx(3.0 * 0.5, rel=1e-6)


def test_class_agnostic_box_loss_uses_the_single_deltas():
    scores, _ = _three_predictions()
    deltas = torch.tensor([[0.1, -0.2, 0.3, 0.4], [0.5, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
    losses = _predictor(agnostic=True).losses((scores, deltas), [_three_rois()])
    assert losses["loss_box_reg"].item() == pytest.approx(1.5 / 3, rel=1e-6)


def test_all_background_without_gt_boxes_gives_zero_box_loss_with_graph():
    scores, deltas = _three_predictions()
    rois = Instances((100, 100), proposal_boxes=_three_rois().proposal_boxes, gt_classes=torch.tensor([2, 2, 2]))
    losses = _predictor().losses((scores, deltas), [rois])
    # CE: targets all 2: rows 0, 1 give ln 3 and ln 4 (logits [0, ln 2, 0] -> p_2 = 1/4); row 2 ln 2
    assert losses["loss_cls"].item() == pytest.approx((math.log(3) + math.log(4) + math.log(2)) / 3, rel=1e-6)
    assert losses["loss_box_reg"].item() == 0.0
    assert losses["loss_box_reg"].requires_grad


def test_losses_with_no_rois_are_zero():
    p = _predictor()
    scores, deltas = p(torch.zeros(0, 8, 2, 2))
    losses = p.losses((scores, deltas), [])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box_reg"].item() == 0.0
    sum(losses.values()).backward()


def test_predict_boxes_and_probs_split_per_image():
    p = _predictor()
    props = [
        Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10]]))),
        Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[10.0, 10, 30, 20], [0.0, 0, 4, 4]]))),
    ]
    scores = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    deltas = torch.zeros(3, 8)
    deltas[1, 4] = 10.0  # class 1 of RoI 1: dx = 10 / wx(10) = 1 -> shift by its width 20
    boxes = p.predict_boxes((scores, deltas), props)
    assert [b.shape for b in boxes] == [(1, 8), (2, 8)]
    torch.testing.assert_close(boxes[1][0], torch.tensor([10.0, 10, 30, 20, 30, 10, 50, 20]))
    probs = p.predict_probs((scores, deltas), props)
    torch.testing.assert_close(probs[1][0], torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(probs[0][0], torch.full((3,), 1 / 3))


# ---------------------------------------------------------------------------- inference
def _infer(boxes, scores, shapes, score_thresh=0.05, topk=100):
    return fast_rcnn_inference(boxes, scores, shapes, score_thresh=score_thresh, nms_thresh=0.5, topk_per_image=topk)


def _inference_case():
    """K = 2, R = 3 RoIs, image (h=100, w=120)."""
    a = [0.0, 0.0, 10.0, 10.0]
    boxes = torch.tensor(
        [
            a + a,  # RoI0: both classes on the same box
            [1.0, 0, 11, 10] + [50.0, 50, 60, 60],  # RoI1: class 0 overlaps RoI0's class 0 (IoU 0.818)
            [-5.0, 0, 5, 10] + [20.0, 20, 200, 30],  # RoI2: class 1 sticks out to x = 200 > w = 120
        ]
    )
    scores = torch.tensor(
        [
            [0.6, 0.3, 0.1],
            [0.5, 0.04, 0.46],  # class 1 below 0.05; background 0.46 is never a detection
            [0.05, 0.9, 0.05],  # class 0 exactly at the threshold: not > 0.05 -> dropped
        ]
    )
    return boxes, scores


def test_inference_threshold_per_class_nms_clip_and_no_background():
    boxes, scores = _inference_case()
    (res,), (idx,) = _infer([boxes], [scores], [(100, 120)])
    # candidates > 0.05: (0, c0, .6), (0, c1, .3), (1, c0, .5), (2, c1, .9). NMS per class:
    # (1, c0) IoU 90 / 110 = 0.818 > 0.5 with (0, c0) -> suppressed; (0, c1) has the same box as (0, c0)
    # but another class -> kept. Sorted by score; RoI2 class 1 clipped to x <= 120.
    torch.testing.assert_close(res.scores, torch.tensor([0.9, 0.6, 0.3]))
    assert res.pred_classes.tolist() == [1, 0, 1]
    assert idx.tolist() == [2, 0, 0]
    torch.testing.assert_close(
        res.pred_boxes.tensor, torch.tensor([[20.0, 20, 120, 30], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    )
    assert res.image_size == (100, 120)


def test_inference_topk_and_clipping_of_negative_coordinates():
    boxes, scores = _inference_case()
    (res,), (idx,) = _infer([boxes], [scores], [(100, 120)], score_thresh=0.01, topk=2)
    # threshold 0.01 admits (2, c0, 0.05) with box [-5, 0, 5, 10] -> clipped [0, 0, 5, 10]; topk 2 keeps .9, .6
    assert res.scores.tolist() == pytest.approx([0.9, 0.6])
    assert idx.tolist() == [2, 0]
    (res,), _ = _infer([boxes], [scores], [(100, 120)], score_thresh=0.01, topk=-1)
    # all candidates: (2,c1,.9) (0,c0,.6) (1,c0,.5: suppressed) (0,c1,.3) (2,c0,.05) (1,c1,.04)
    # (2, c0) [0, 0, 5, 10] vs (0, c0) [0, 0, 10, 10]: IoU 50/100 = 0.5, not > 0.5 -> kept
    torch.testing.assert_close(res.scores, torch.tensor([0.9, 0.6, 0.3, 0.05, 0.04]))
    torch.testing.assert_close(res.pred_boxes.tensor[3], torch.tensor([0.0, 0, 5, 10]))


def test_inference_class_agnostic_boxes():
    # one box for all classes: each (RoI, class) above threshold becomes a detection of that box
    boxes = torch.tensor([[0.0, 0, 10, 10], [100.0, 100, 110, 110]])
    scores = torch.tensor([[0.5, 0.4, 0.1], [0.02, 0.7, 0.28]])
    (res,), (idx,) = _infer([boxes], [scores], [(200, 200)], topk=10)
    torch.testing.assert_close(res.scores, torch.tensor([0.7, 0.5, 0.4]))
    assert res.pred_classes.tolist() == [1, 0, 1]
    assert idx.tolist() == [1, 0, 0]
    torch.testing.assert_close(
        res.pred_boxes.tensor, torch.tensor([[100.0, 100, 110, 110], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    )


def test_inference_drops_non_finite_rows_and_handles_several_images():
    boxes, scores = _inference_case()
    bad_boxes = boxes.clone()
    bad_boxes[2, 0] = float("inf")  # RoI2 dropped entirely
    r0, r1 = _infer([bad_boxes, boxes], [scores, scores], [(100, 120), (100, 120)])[0]
    torch.testing.assert_close(r0.scores, torch.tensor([0.6, 0.3]))
    assert len(r1) == 3


def test_predictor_inference_end_to_end():
    p = _predictor(test_score_thresh=0.35, test_detections_per_img=5)
    props = [Instances((40, 40), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10]])))]
    scores = torch.tensor([[math.log(6.0), math.log(3.0), 0.0]])  # softmax = [0.6, 0.3, 0.1]
    deltas = torch.zeros(1, 8)
    (res,), (idx,) = p.inference((scores, deltas), props)
    # class 1 (0.3) is below 0.35 -> only class 0 remains; deltas 0 decode to the proposal itself
    assert res.pred_classes.tolist() == [0] and idx.tolist() == [0]
    assert res.scores[0].item() == pytest.approx(0.6, rel=1e-6)
    torch.testing.assert_close(res.pred_boxes.tensor[0], torch.tensor([0.0, 0, 10, 10]))


def test_box_head_fc_outputs_seen_by_forward_hooks_are_not_overwritten_by_the_relu():
    # Researchers read box features with forward hooks on fc1 / fc2; the ReLU after them must not
    # rewrite in place what the hook was given.
    from framework.modeling.roi_heads.box_head import FastRCNNConvFCHead

    torch.manual_seed(0)
    head = FastRCNNConvFCHead(ShapeSpec(channels=4, height=3, width=3), num_fc=2, fc_dim=16)
    seen = {}

    def keep(name):
        def hook(module, args, out):  # returns None: the output goes on unchanged
            seen[name] = (out, out.clone())
        return hook

    for name in ("fc1", "fc2"):
        getattr(head, name).register_forward_hook(keep(name))
    out = head(torch.randn(5, 4, 3, 3))
    for name, (given, copy) in seen.items():
        assert torch.equal(given, copy) and (copy < 0).any(), name
    assert torch.equal(out, seen["fc2"][1].relu())


def test_every_knob_is_reachable_from_the_config():
    from framework.config.compose import compose
    from framework.registry import META_ARCHITECTURES

    cfg = compose(["model.roi_heads.box_predictor.loss_weight_cls=2.0", "model.roi_heads.box_predictor.loss_weight_box_reg=0.5",
                   "model.roi_heads.box_predictor.bbox_reg_weights=[20,20,10,10]",
                   "model.roi_heads.box_predictor.test_detections_per_img=7"])
    with torch.device("meta"):
        predictor = META_ARCHITECTURES.build(cfg.model, path="model").roi_heads.box_predictor
    assert predictor.loss_weight == {"loss_cls": 2.0, "loss_box_reg": 0.5}
    assert predictor.box2box_transform.weights == (20, 20, 10, 10) and predictor.test_detections_per_img == 7
    default = _predictor()
    assert default.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0) and default.loss_weight == {
        "loss_cls": 1.0, "loss_box_reg": 1.0}
    torchvision = compose(["model=mask_rcnn_R_50_FPN_torchvision"]).model.roi_heads.box_predictor
    assert (torchvision.smooth_l1_beta, torchvision.test_min_box_size) == (1 / 9, 0.01)


def test_a_registered_box_predictor_replaces_the_default():
    from framework.config.compose import compose
    from framework.registry import BOX_PREDICTORS, META_ARCHITECTURES

    @BOX_PREDICTORS.register("HalfClsLossOutputLayers_test")
    class HalfClsLoss(FastRCNNOutputLayers):
        def losses(self, predictions, proposals):
            out = super().losses(predictions, proposals)
            return {**out, "loss_cls": out["loss_cls"] * 0.5}

    try:
        model_cfg = compose([]).model
        model_cfg.roi_heads.box_predictor = {"name": "HalfClsLossOutputLayers_test", "test_score_thresh": 0.2}
        with torch.device("meta"):
            predictor = META_ARCHITECTURES.build(model_cfg, path="model").roi_heads.box_predictor
        assert type(predictor) is HalfClsLoss and predictor.test_score_thresh == 0.2
        assert predictor.cls_score.weight.shape[0] == 5  # the RoI heads gave it num_classes (4) and the head's shape
    finally:
        BOX_PREDICTORS._obj_map.pop("HalfClsLossOutputLayers_test")


def test_predict_boxes_for_gt_classes_reads_each_proposals_class_column():
    from framework.layers import ShapeSpec
    from framework.structures import Boxes, Instances

    torch.manual_seed(0)
    layers = FastRCNNOutputLayers(ShapeSpec(channels=4), 3)
    predictions = layers(torch.randn(3, 4))
    props = Instances((50, 50), proposal_boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 30, 20], [1.0, 2, 3, 4]])),
                      gt_classes=torch.tensor([2, 0, 3]))  # 3 = background, clamped to class 2 as detectron2
    (per_class,) = layers.predict_boxes(predictions, [props])
    (picked,) = layers.predict_boxes_for_gt_classes(predictions, [props])
    expected = torch.stack([per_class[0, 8:12], per_class[1, 0:4], per_class[2, 8:12]])
    assert torch.equal(picked, expected)
