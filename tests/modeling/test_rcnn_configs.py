"""The shipped model presets build from their Hydra configs and run forward/backward and inference."""

from __future__ import annotations

import pytest
import torch

from framework.config.compose import compose
from framework.registry import META_ARCHITECTURES
from framework.structures import Boxes, Instances, PolygonMasks


@pytest.fixture(autouse=True)
def _one_thread():
    # Two threads on a loaded 2-core machine are much slower than one for these small convs.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(h: int, w: int, train: bool) -> dict:
    x = {"image": torch.rand(3, h, w) * 255, "height": h, "width": w}
    if train:
        inst = Instances((h, w))
        inst.gt_boxes = Boxes([[8.0, 8.0, 60.0, 50.0], [40.0, 30.0, 100.0, 90.0]])
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = PolygonMasks([[[8, 8, 60, 8, 60, 50, 8, 50]], [[40, 30, 100, 30, 70, 90]]])
        x["instances"] = inst
    return x


@pytest.mark.parametrize("preset, masks", [("mask_rcnn_R_50_FPN", True), ("faster_rcnn_R_50_FPN", False)])
def test_r50_fpn_presets_train_step_and_inference(preset, masks):
    torch.manual_seed(0)
    # Without pretrained weights a FrozenBN ResNet's activations explode and saturate the softmax;
    # GroupNorm keeps a randomly initialised model's scores informative enough to give detections.
    cfg = compose([f"model={preset}", "model.roi_heads.num_classes=3", "model.roi_heads.test_score_thresh=0.0",
                   "model.backbone.bottom_up.norm=GN"])
    model = META_ARCHITECTURES.build(cfg.model, path="model")
    assert model.roi_heads.mask_on == masks

    model.train()
    losses = model([_inputs(128, 160, True), _inputs(112, 144, True)])
    expected = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"} | ({"loss_mask"} if masks else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # freeze_at=2: the stem and res2 get no gradient, res3 and the heads do
    assert model.backbone.bottom_up.stem.conv1.weight.grad is None
    assert model.backbone.bottom_up.res3[0].conv1.weight.grad is not None
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        (out,) = model([_inputs(96, 128, False)])
    inst = out["instances"]
    assert inst.image_size == (96, 128)
    assert inst.pred_boxes.tensor.shape == (len(inst), 4) and len(inst) > 0
    assert inst.scores.shape == inst.pred_classes.shape == (len(inst),)
    assert inst.has("pred_masks") == masks
    if masks:
        assert inst.pred_masks.shape == (len(inst), 96, 128) and inst.pred_masks.dtype == torch.bool


@pytest.mark.slow
def test_r50_fpn_mask_rcnn_inference_on_a_full_size_image():
    torch.manual_seed(0)
    cfg = compose(["model=mask_rcnn_R_50_FPN", "dataset=coco", "model.backbone.bottom_up.norm=GN",
                   "model.roi_heads.test_score_thresh=0.0"])
    model = META_ARCHITECTURES.build(cfg.model, path="model")
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 800, 1333) * 255}])
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (800, 1333)
    assert len(inst) > 0
    assert inst.pred_boxes.tensor.shape == (len(inst), 4)
    assert inst.scores.shape == (len(inst),) and inst.pred_classes.max() < 80
    assert inst.pred_masks.shape == (len(inst), 800, 1333) and inst.pred_masks.dtype == torch.bool
