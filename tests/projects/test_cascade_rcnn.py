"""Cascade R-CNN (projects/cascade_rcnn): detectron2's checkpoint layout, the cascade's inference
against a reference written from detectron2's definition, training, and its config errors."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from tiny_job import first_test_images, tiny_job

from framework.checkpoint.checkpointer import Checkpointer
from framework.checkpoint.detectron2 import to_detectron2_zoo_layout
from framework.config.compose import compose
from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.modeling.roi_heads import fast_rcnn_inference
from framework.registry import META_ARCHITECTURES, ROI_HEADS
from framework.structures import Boxes, Instances
from framework.utils.events import EventStorage
from projects.cascade_rcnn import scale_gradient

QUICK = ["model=cascade_mask_rcnn_R_18_FPN_quick"]
WEIGHTS = [(10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)]


def _model(overrides, seed=0):
    torch.manual_seed(seed)
    return META_ARCHITECTURES.build(compose(overrides).model, path="model").eval()


def _images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, 96 + 16 * i, 128), generator=g).float()} for i in range(n)]


def _stir(model, seed=1):
    """Predictor weights large enough that every stage moves the boxes and the scores differ per class."""
    g = torch.Generator().manual_seed(seed)
    for predictor in model.roi_heads.box_predictor:
        for p in predictor.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.05


# ---------------------------------------------------------------------------- checkpoint layout
#: detectron2's names of Cascade Mask R-CNN's RoI-head parameters (COCO-InstanceSegmentation/
#: cascade_mask_rcnn_R_50_FPN_3x): three box heads and predictors, one mask head. Written out here,
#: not derived from the model.
D2_CASCADE_ROI_KEYS = sorted(
    [f"roi_heads.box_head.{k}.{fc}.{leaf}" for k in range(3) for fc in ("fc1", "fc2") for leaf in ("weight", "bias")]
    + [f"roi_heads.box_predictor.{k}.{layer}.{leaf}" for k in range(3) for layer in ("cls_score", "bbox_pred")
       for leaf in ("weight", "bias")]
    + [f"roi_heads.mask_head.mask_fcn{i}.{leaf}" for i in range(1, 5) for leaf in ("weight", "bias")]
    + [f"roi_heads.mask_head.{layer}.{leaf}" for layer in ("deconv", "predictor") for leaf in ("weight", "bias")]
)


def test_parameter_names_and_shapes_are_detectron2s():
    model = _model(["model=cascade_mask_rcnn_R_50_FPN", "dataset=coco"])
    sd = model.state_dict()
    assert sorted(k for k in sd if k.startswith("roi_heads.")) == D2_CASCADE_ROI_KEYS
    # class-agnostic regression: one box per RoI in every stage; 80 classes + background
    for k in range(3):
        assert sd[f"roi_heads.box_predictor.{k}.bbox_pred.weight"].shape == (4, 1024)
        assert sd[f"roi_heads.box_predictor.{k}.cls_score.weight"].shape == (81, 1024)
    # everything outside the RoI heads is Mask R-CNN's
    plain = _model(["model=mask_rcnn_R_50_FPN", "dataset=coco"]).state_dict()
    assert {k for k in sd if not k.startswith("roi_heads.")} == {k for k in plain if not k.startswith("roi_heads.")}


def test_detectron2_layout_checkpoint_loads_completely_and_gives_the_same_detections(tmp_path):
    source = _model(QUICK, seed=1)
    _stir(source)
    zoo = to_detectron2_zoo_layout(source.state_dict(), author="Detectron2 Model Zoo")
    path = tmp_path / "model_final_cascade.pkl"
    path.write_bytes(pickle.dumps(zoo))

    ckpt = Checkpointer(_model(QUICK, seed=2))
    ckpt.load(str(path))
    report = ckpt.last_report
    assert report.missing == () and report.unexpected == () and report.wrong_shape == ()
    loaded = ckpt.model.eval()
    with torch.no_grad():
        expected, got = source(_images()), loaded(_images())
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert len(e) > 0
        for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
            a, b = e.get(field), g.get(field)
            a, b = (a.tensor, b.tensor) if isinstance(a, Boxes) else (a, b)
            assert torch.equal(a, b), field


# ---------------------------------------------------------------------------- inference vs a reference
def _decode(deltas, boxes, weights):
    """detectron2's Box2BoxTransform.apply_deltas for one box per RoI, written out."""
    wx, wy, ww, wh = weights
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    clamp = math.log(1000.0 / 16)
    dw, dh = (deltas[:, 2] / ww).clamp(max=clamp), (deltas[:, 3] / wh).clamp(max=clamp)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)


@torch.no_grad()
def _reference_detections(heads, features, proposals):
    """detectron2's CascadeROIHeads inference: each stage pools the previous stage's boxes (clipped,
    none dropped), probabilities averaged over stages, the last stage's boxes, then NMS."""
    feats = [features[f] for f in heads.box_in_features]
    sizes = [p.image_size for p in proposals]
    boxes = [p.proposal_boxes.tensor for p in proposals]
    total = None
    for k in range(3):
        x = heads.box_pooler(feats, [Boxes(b) for b in boxes])
        scores, deltas = heads.box_predictor[k](heads.box_head[k](x))
        probs = F.softmax(scores.float(), dim=-1)
        total = probs if total is None else total + probs
        decoded = _decode(deltas, torch.cat(boxes), WEIGHTS[k])
        boxes = []
        for b, (h, w) in zip(decoded.split([len(p) for p in proposals]), sizes):
            b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
            boxes.append(b)
    scores = list((total / 3).split([len(p) for p in proposals]))
    last = heads.box_predictor[-1]
    out, _ = fast_rcnn_inference(boxes, scores, sizes, score_thresh=last.test_score_thresh,
                                 nms_thresh=last.test_nms_thresh, topk_per_image=last.test_detections_per_img)
    return out


def test_inference_equals_detectron2s_definition():
    model = _model(QUICK + ["model.roi_heads.box_predictor.test_score_thresh=0.02"], seed=3)
    _stir(model)
    with torch.no_grad():
        images = model.preprocess_image(_images())
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features)
        got, _ = model.roi_heads(images, features, proposals)
    expected = _reference_detections(model.roi_heads, features, proposals)
    assert sum(len(e) for e in expected) > 10
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.pred_boxes.tensor, e.pred_boxes.tensor, rtol=0, atol=1e-4)
        torch.testing.assert_close(g.scores, e.scores, rtol=0, atol=1e-6)
        assert torch.equal(g.pred_classes, e.pred_classes)
        assert g.pred_masks.shape == (len(g), 1, 28, 28)


# ---------------------------------------------------------------------------- training
def test_stage_gradient_scaling():
    x = torch.ones(3, requires_grad=True)
    (scale_gradient(x, 1 / 3) * torch.tensor([3.0, 6.0, 9.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def _tiny_heads(**knobs):
    spec = {"name": "CascadeROIHeads", "num_classes": 3, "in_features": ["p2"], "batch_size_per_image": 16,
            "box_head": {"name": "FastRCNNConvFCHead", "fc_dim": 8},
            "mask_head": {"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 4}, **knobs}
    return ROI_HEADS.build(spec, input_shape={"p2": ShapeSpec(channels=4, stride=4)})


def test_training_gives_each_stages_losses_and_scalars():
    heads = _tiny_heads().train()
    torch.manual_seed(0)
    features = {"p2": torch.randn(1, 4, 25, 25, requires_grad=True)}
    gt = Instances((100, 100), gt_boxes=Boxes(torch.tensor([[10.0, 10, 60, 60], [50.0, 40, 90, 95]])),
                   gt_classes=torch.tensor([0, 2]))
    from framework.structures import BitMasks
    gt.gt_masks = BitMasks(torch.zeros(2, 100, 100, dtype=torch.bool))
    proposals = Instances((100, 100), proposal_boxes=Boxes(torch.tensor([[12.0, 8, 58, 66], [0.0, 0, 30, 30]])),
                          objectness_logits=torch.zeros(2))
    with EventStorage() as storage:
        _, losses = heads(None, features, [proposals], [gt])
    assert set(losses) == {f"loss_{n}_stage{k}" for n in ("cls", "box_reg") for k in range(3)} | {"loss_mask"}
    scalars = storage.latest()
    assert {"stage1/roi_head/num_fg_samples", "stage2/fast_rcnn/cls_accuracy", "roi_head/num_fg_samples"} <= set(scalars)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in heads.box_predictor.parameters())


def test_default_job_with_one_override_trains_and_evaluates(tmp_path):
    from framework.engine.run import run

    cfg = compose(tiny_job(2) + first_test_images(4) + ["model/roi_heads=CascadeROIHeads_quick", "hooks.writer.period=1"])
    run(cfg, output_dir=tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_box_reg_stage2" in line for line in lines)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"bbox/AP", "segm/AP"} <= set(metrics)


# ---------------------------------------------------------------------------- config errors
def test_presets_compose_with_detectron2s_stage_values():
    model = compose(["model=cascade_mask_rcnn_R_50_FPN"]).model
    heads = model.roi_heads
    assert model.rpn.post_nms_topk_train == 2000
    assert list(heads.stage_iou_thresholds) == [0.5, 0.6, 0.7]
    assert [list(w) for w in heads.stage_bbox_reg_weights] == [list(w) for w in WEIGHTS]
    quick = compose(QUICK).model.roi_heads
    assert quick.name == "CascadeROIHeads" and quick.batch_size_per_image == 128 and quick.box_head.fc_dim == 256


@pytest.mark.parametrize("knobs, message", [
    ({"stage_iou_thresholds": [0.5, 0.6]},
     r"stage_iou_thresholds has 2 stages \[0\.5, 0\.6\] but model\.roi_heads\.stage_bbox_reg_weights has 3"),
    ({"stage_bbox_reg_weights": [[10, 10, 5, 5], [20, 20, 10], [30, 30, 15, 15]]},
     r"stage_bbox_reg_weights\[1\] = \[20, 20, 10\]: expected 4 numbers"),
    ({"stage_iou_thresholds": [0.5, 1.2, 0.7]}, r"stage_iou_thresholds\[1\] = 1\.2"),
])
def test_mismatched_stage_lists_are_one_message(knobs, message):
    with pytest.raises(ConfigError, match=message):
        _tiny_heads(**knobs)


def test_wrong_type_knob_is_caught_at_compose():
    with pytest.raises(ConfigError, match=r"stage_iou_thresholds"):
        compose(QUICK + ["model.roi_heads.stage_iou_thresholds=high"])
