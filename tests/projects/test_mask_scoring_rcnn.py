"""Mask Scoring R-CNN plugin: MaskIoU targets on hand-made masks, the head, the loss's gradient
path, the rescoring arithmetic, and a short train + evaluate of the default job with its RoI heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from framework.config.compose import compose
from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.registry import ROI_HEADS
from framework.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks
from projects.mask_scoring_rcnn.mask_areas import (
    clip_polygon_to_box,
    mask_area_in_boxes,
    polygon_area,
)
from projects.mask_scoring_rcnn.maskiou import maskiou_loss, maskiou_rescore
from projects.mask_scoring_rcnn.maskiou_head import MaskIoUHead
from projects.mask_scoring_rcnn.maskiou_targets import mask_iou_on_grid, maskiou_targets
from projects.mask_scoring_rcnn.roi_heads import MaskScoringROIHeads

#: As tests/config/conftest.py SHORT_JOB: 2 iterations on small images, in-process data loading.
SHORT_JOB = ["train.max_iter=2", "lr_scheduler.steps=[]", "lr_scheduler.warmup_iters=1",
             "input.train.augmentations.0.short_edge_length=[128]", "input.test.augmentations.0.short_edge_length=[128]",
             "dataloader.train.num_workers=0",
             "dataloader.test.num_workers=0"]
#: Cheaper evaluation of the 50 validation images (fewer proposals and detections, smaller images).
SMALL_EVAL = ["input.train.augmentations.0.max_size=192", "input.test.augmentations.0.max_size=192",
              "model.rpn.post_nms_topk_test=50",
              "model.roi_heads.box_predictor.test_detections_per_img=20"]


# ---------------------------------------------------------------------------- targets
def test_iou_on_grid_by_hand():
    pred = torch.zeros(1, 4, 4)
    pred[0, :2, :2] = 1  # 4 cells
    gt = torch.zeros(1, 4, 4)
    gt[0, :2, :3] = 1  # 6 cells, the 4 predicted ones among them
    assert mask_iou_on_grid(pred, gt).item() == pytest.approx(4 / 6)
    # half the gt instance lies outside the RoI: its area is 12 cells, the union 4 + 12 - 4
    assert mask_iou_on_grid(pred, gt, torch.tensor([0.5])).item() == pytest.approx(4 / 12)
    assert mask_iou_on_grid(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 0.0


def test_area_of_a_bitmask_inside_a_box_counts_cut_pixels_by_fraction():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2:6, 2:6] = True  # 16 px
    # x from 3.5: column 3 counts half, columns 4 and 5 fully -> 2.5 px per row, 4 rows
    assert mask_area_in_boxes(BitMasks(mask), torch.tensor([[3.5, 0.0, 10.0, 10.0]])).item() == pytest.approx(10.0)
    assert mask_area_in_boxes(BitMasks(mask), torch.tensor([[-5.0, -5.0, 20.0, 20.0]])).item() == pytest.approx(16.0)


def test_clipping_a_non_convex_polygon_keeps_the_exact_area():
    # an L: the 4x4 square minus its [2,4]x[2,4] quarter (area 12)
    ell = np.array([0, 0, 4, 0, 4, 2, 2, 2, 2, 4, 0, 4], dtype=np.float64)
    assert polygon_area(ell) == pytest.approx(12.0)
    # inside [1,3]x[1,3]: the 2x2 window minus the [2,3]x[2,3] corner
    assert polygon_area(clip_polygon_to_box(ell, np.array([1.0, 1.0, 3.0, 3.0]))) == pytest.approx(3.0)
    assert polygon_area(clip_polygon_to_box(ell, np.array([5.0, 5.0, 9.0, 9.0]))) == 0.0
    masks = PolygonMasks([[ell], [ell]])
    areas = mask_area_in_boxes(masks, torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 4.0]]))
    assert areas.tolist() == pytest.approx([3.0, 8.0])


def _half_box_proposal(gt_masks) -> Instances:
    """A 10x10 gt square at the top-left of a 20x20 image; the proposal covers its left half."""
    return Instances((20, 20), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 10.0]])),
                     gt_classes=torch.tensor([0]), gt_masks=gt_masks)


@pytest.mark.parametrize("kind", ["bitmask", "polygon"])
def test_maskiou_target_uses_the_whole_gt_instance(kind):
    if kind == "bitmask":
        full = torch.zeros(1, 20, 20, dtype=torch.bool)
        full[0, :10, :10] = True
        gt = BitMasks(full)
    else:
        gt = PolygonMasks([[np.array([0, 0, 10, 0, 10, 10, 0, 10], dtype=np.float64)]])
    proposals = [_half_box_proposal(gt)]
    everywhere = torch.full((1, 10, 10), 5.0)  # the whole box predicted: 50 px of the 100 px gt
    assert maskiou_targets(everywhere, proposals).item() == pytest.approx(0.5)
    # inside the box alone, the same mask looks perfect: the bias the area ratio removes
    assert maskiou_targets(everywhere, proposals, full_gt_area=False).item() == pytest.approx(1.0)
    left = torch.full((1, 10, 10), -5.0)
    left[:, :, :5] = 5.0  # 25 px of the gt
    assert maskiou_targets(left, proposals).item() == pytest.approx(0.25)
    # "binarised at 0.5" is the probability: sigmoid(0.2) = 0.55 is foreground, sigmoid(-0.2) is not
    assert maskiou_targets(torch.full((1, 10, 10), 0.2), proposals).item() == pytest.approx(0.5)
    assert maskiou_targets(torch.full((1, 10, 10), -0.2), proposals).item() == 0.0


def test_targets_are_detached():
    gt = PolygonMasks([[np.array([0, 0, 10, 0, 10, 10, 0, 10], dtype=np.float64)]])
    logits = torch.full((1, 10, 10), 5.0, requires_grad=True)
    targets = maskiou_targets(logits, [_half_box_proposal(gt)])
    assert not targets.requires_grad
    pred = torch.tensor([0.9], requires_grad=True)
    given = torch.tensor([0.5], requires_grad=True)
    loss = maskiou_loss(pred, given)
    assert loss.item() == pytest.approx(0.5 * 0.4**2)
    loss.backward()
    assert pred.grad.item() == pytest.approx(0.4) and given.grad is None


# ---------------------------------------------------------------------------- head
def test_head_output_shape_and_its_stride_2_conv():
    head = MaskIoUHead(ShapeSpec(channels=8, height=14, width=14), 3, num_conv=2, conv_dim=16, fc_dim=32)
    out = head(torch.randn(5, 8, 14, 14), torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 3)
    assert head.fcs[0].in_features == 16 * 7 * 7  # 14 -> 7 by the last conv
    assert head.convs[0].in_channels == 9  # the feature and the pooled mask
    assert head(torch.randn(0, 8, 14, 14), torch.randn(0, 1, 28, 28)).shape == (0, 3)


def _roi_heads() -> MaskScoringROIHeads:
    return ROI_HEADS.build(
        {"name": "MaskScoringROIHeads", "num_classes": 2, "in_features": ["p2"], "batch_size_per_image": 16,
         "box_head": {"name": "FastRCNNConvFCHead", "fc_dim": 32},
         "mask_head": {"name": "MaskRCNNConvUpsampleHead", "num_conv": 1, "conv_dim": 8},
         "maskiou_num_conv": 2, "maskiou_conv_dim": 8, "maskiou_fc_dim": 16},
        input_shape={"p2": ShapeSpec(channels=8, stride=4)},
    )


def _batch(mask_format: str = "polygon"):
    torch.manual_seed(0)
    features = {"p2": torch.randn(1, 8, 16, 16)}
    square = PolygonMasks([[np.array([8, 8, 40, 8, 40, 40, 8, 40], dtype=np.float64)]])
    gt_masks = square if mask_format == "polygon" else BitMasks.from_polygon_masks(square, 64, 64)
    gt = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]])), gt_classes=torch.tensor([1]),
                   gt_masks=gt_masks)
    boxes = torch.tensor([[10.0, 6.0, 38.0, 42.0], [0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 60.0, 60.0]])
    proposals = Instances((64, 64), proposal_boxes=Boxes(boxes), objectness_logits=torch.zeros(3))
    return ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), features, proposals, gt


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_loss_maskiou_trains_the_maskiou_head_only_through_its_inputs(mask_format):
    heads = _roi_heads().train()
    images, features, proposals, gt = _batch(mask_format)
    _, losses = heads(images, features, [proposals], [gt])
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_maskiou"} <= set(losses)
    losses["loss_maskiou"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.maskiou_head.parameters())
    assert all(p.grad is None for p in heads.box_predictor.parameters())  # the box branch is not its input


def test_inference_rescores_and_keeps_both_parts():
    heads = _roi_heads().eval()
    images, features, proposals, _ = _batch()
    with torch.no_grad():
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([2.0, 2.0, -5.0]))  # every RoI detects
        (out,), _ = heads(images, features, [proposals])
    assert len(out) > 0 and out.pred_masks.shape == (len(out), 1, 28, 28)
    assert ((out.mask_iou >= 0) & (out.mask_iou <= 1)).all()
    torch.testing.assert_close(out.scores, out.det_scores * out.mask_iou)


def test_rescoring_arithmetic():
    a = Instances((8, 8), scores=torch.tensor([0.9, 0.5]), pred_classes=torch.tensor([0, 1]))
    b = Instances((8, 8), scores=torch.tensor([0.8]), pred_classes=torch.tensor([1]))
    maskiou_rescore(torch.tensor([0.5, 1.2, -0.3]), [a, b])
    assert a.det_scores.tolist() == pytest.approx([0.9, 0.5]) and b.det_scores.tolist() == pytest.approx([0.8])
    assert a.mask_iou.tolist() == pytest.approx([0.5, 1.0]) and b.mask_iou.tolist() == [0.0]  # clamped to [0, 1]
    assert a.scores.tolist() == pytest.approx([0.45, 0.5]) and b.scores.tolist() == [0.0]
    with pytest.raises(ValueError, match="2 IoUs for 3 detections"):
        maskiou_rescore(torch.ones(2), [a, b])


# ---------------------------------------------------------------------------- configs
def test_option_and_preset_compose_with_the_job_mask_head():
    by_option = compose(["model/roi_heads=MaskScoringROIHeads_quick"])
    by_preset = compose(["model=mask_scoring_rcnn_R_18_FPN_quick"])
    assert OmegaConf.to_container(by_option.model) == OmegaConf.to_container(by_preset.model)
    heads = by_option.model.roi_heads
    assert heads.name == "MaskScoringROIHeads" and heads.batch_size_per_image == 128
    assert heads.box_head.fc_dim == 256 and heads.maskiou_conv_dim == 64 and heads.mask_head.conv_dim == 64
    full = compose(["model=mask_rcnn_R_50_FPN", "model/roi_heads=MaskScoringROIHeads"]).model.roi_heads
    assert (full.maskiou_conv_dim, full.maskiou_fc_dim, full.batch_size_per_image) == (256, 1024, 512)
    with pytest.raises(ConfigError, match="maskiou_loss_weight"):
        compose(["model/roi_heads=MaskScoringROIHeads_quick", "model.roi_heads.maskiou_los_weight=2"])


def test_without_a_mask_head_there_is_nothing_to_score():
    heads = ROI_HEADS.build({"name": "MaskScoringROIHeads", "in_features": ["p2"]},
                            input_shape={"p2": ShapeSpec(channels=8, stride=4)})
    assert heads.maskiou_head is None and not heads.mask_on


# ---------------------------------------------------------------------------- end to end
def test_default_job_trains_evaluates_and_outputs_mask_iou(tmp_path):
    from framework.data.coco import load_coco_json
    from framework.data.synthetic import generate_synthetic_coco
    from framework.engine.predictor import Predictor
    from framework.engine.run import run

    cfg = compose(SHORT_JOB + SMALL_EVAL + ["model/roi_heads=MaskScoringROIHeads_quick", "hooks.writer.period=1"])
    run(cfg, output_dir=tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [line["loss_maskiou"] for line in lines if "loss_maskiou" in line]
    assert logged and all(np.isfinite(v) and v >= 0 for v in logged)
    assert any("mask_scoring/maskiou_target" in line for line in lines)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"bbox/AP", "segm/AP"} <= set(metrics)

    predictor = Predictor.from_run(tmp_path / "run", checkpoint="last", device="cpu")
    assert predictor.model.roi_heads.maskiou_head is not None
    root = tmp_path / "images"
    image = load_coco_json(generate_synthetic_coco(root, split="val", num_images=1, seed=0), root / "val")[0][0]
    out = predictor(image["file_name"])
    assert len(out) > 0 and {"mask_iou", "det_scores", "scores", "pred_masks"} <= set(out.get_fields())
    torch.testing.assert_close(out.scores, out.det_scores * out.mask_iou)
