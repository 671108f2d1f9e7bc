"""PointRend (projects/point_rend): point sampling by hand, labels from bitmasks and polygons,
detectron2's parameter names, training and the adaptive subdivision at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.config.compose import compose
from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.registry import META_ARCHITECTURES, MASK_HEADS, ROI_HEADS
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks
from framework.utils.events import EventStorage
from projects.point_rend.point_features import (
    point_sample,
    points_in_image,
    regular_grid_points,
    sample_point_features,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from projects.point_rend.point_labels import point_labels, points_in_polygons


# ---------------------------------------------------------------------------- point sampling
def test_regular_grid_is_the_cell_centres_row_major():
    g = regular_grid_points(2, 2, torch.device("cpu"))
    assert g.shape == (2, 4, 2)
    assert g[0].tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]


def test_point_sample_reads_cell_centres_and_interpolates():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)  # value = 4 * row + col
    pts = torch.tensor([[[0.125, 1 / 6], [0.875, 5 / 6], [0.25, 0.5]]])  # centres of (0,0), (2,3); between (1,0) and (1,1)
    assert point_sample(x, pts)[0, 0].tolist() == pytest.approx([0.0, 11.0, 4.5], abs=1e-6)


def test_uncertain_points_on_grid_are_the_smallest_absolute_logits():
    logits = torch.full((1, 1, 2, 3), 5.0)
    logits[0, 0, 1, 2] = 0.1
    logits[0, 0, 0, 1] = -0.2
    idx, pts = uncertain_points_on_grid(-logits.abs(), 2)
    assert idx[0].tolist() == [5, 1]
    torch.testing.assert_close(pts[0], torch.tensor([[5 / 6, 0.75], [0.5, 0.25]]))


def test_training_points_take_the_uncertain_ones_first():
    torch.manual_seed(0)
    coarse = torch.full((3, 1, 8, 8), 6.0)
    coarse[:, :, :, 4:] = 0.0  # the right half is uncertain
    pts = uncertain_points_with_randomness(coarse, 40, oversample_ratio=3, importance_sample_ratio=0.75)
    assert pts.shape == (3, 40, 2)
    # 30 importance points, from 120 candidates of which ~60 lie in the right half: all on the right
    assert (pts[:, :30, 0] >= 0.5 - 1 / 16).all()
    assert (pts[:, 30:, 0] < 0.5).any()  # the 10 uniform ones are not restricted


def test_points_in_image_and_feature_sampling_at_known_positions():
    boxes = torch.tensor([[8.0, 4.0, 24.0, 12.0]])
    assert points_in_image(boxes, torch.tensor([[[0.5, 0.5], [0.0, 1.0]]]))[0].tolist() == [[16.0, 8.0], [8.0, 12.0]]
    # a stride-4 map whose value is the x pixel coordinate of each cell centre
    feature = (torch.arange(16.0) * 4 + 2).expand(1, 1, 8, 16).contiguous()
    out = sample_point_features([feature], [4], [Boxes(boxes)], torch.tensor([[[0.5, 0.5], [0.25, 0.5]]]))
    assert out.shape == (1, 1, 2) and out[0, 0].tolist() == pytest.approx([16.0, 12.0])


# ---------------------------------------------------------------------------- labels
def test_points_in_polygons_concave_and_two_parts():
    l_shape = np.array([0, 0, 4, 0, 4, 1, 1, 1, 1, 4, 0, 4], dtype=float)  # an L of width 1
    square = np.array([10, 10, 12, 10, 12, 12, 10, 12], dtype=float)
    xy = np.array([[0.5, 3.0], [2.0, 0.5], [2.0, 2.0], [11.0, 11.0], [9.0, 11.0]])
    assert points_in_polygons([l_shape, square], xy).tolist() == [True, True, False, True, False]


def test_point_labels_agree_for_bitmasks_and_polygons_away_from_the_edge():
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 5:15, 4:12] = True  # pixels x 4..11, y 5..14 -> the square [4, 12] x [5, 15]
    poly = PolygonMasks([[np.array([4, 5, 12, 5, 12, 15, 4, 15], dtype=float)]])
    pts = torch.tensor([[[8.0, 10.0], [2.0, 10.0], [8.0, 17.0], [11.5, 14.5]]])
    for masks in (BitMasks(mask), poly):
        inst = Instances((20, 20), gt_masks=masks, gt_classes=torch.tensor([0]))
        assert point_labels([inst], pts)[0].tolist() == [1.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------------------- the head
#: detectron2's names of PointRend's mask-head parameters (pointrend_rcnn_R_50_FPN): written out.
D2_POINT_REND_KEYS = sorted(
    [f"roi_heads.mask_head.coarse_head.{m}.{leaf}" for m in ("reduce_spatial_dim_conv", "fc1", "fc2", "prediction")
     for leaf in ("weight", "bias")]
    + [f"roi_heads.mask_head.point_head.{m}.{leaf}" for m in ("fc1", "fc2", "fc3", "predictor") for leaf in ("weight", "bias")]
)


def test_parameter_names_and_shapes_are_detectron2s():
    torch.manual_seed(0)
    model = META_ARCHITECTURES.build(compose(["model=point_rend_rcnn_R_50_FPN", "dataset=coco"]).model, path="model")
    sd = model.state_dict()
    assert sorted(k for k in sd if k.startswith("roi_heads.mask_head.")) == D2_POINT_REND_KEYS
    assert sd["roi_heads.mask_head.coarse_head.fc1.weight"].shape == (1024, 256 * 7 * 7)
    assert sd["roi_heads.mask_head.coarse_head.prediction.weight"].shape == (80 * 7 * 7, 1024)
    assert sd["roi_heads.mask_head.point_head.fc1.weight"].shape == (256, 256 + 80, 1)
    assert sd["roi_heads.mask_head.point_head.fc2.weight"].shape == (256, 256 + 80, 1)
    assert sd["roi_heads.mask_head.point_head.predictor.weight"].shape == (80, 256 + 80, 1)
    assert model.roi_heads.mask_pooler is None and model.roi_heads.train_on_pred_boxes
    head = model.roi_heads.mask_head
    assert (head.init_resolution, head.subdivision_steps) == (28, 3)  # 7 -> 28 folded, then 3 steps to 224


def _heads(**mask_knobs):
    spec = {"name": "StandardROIHeads", "num_classes": 3, "in_features": ["p2"], "batch_size_per_image": 16,
            "box_head": {"name": "FastRCNNConvFCHead", "fc_dim": 8}, "mask_pooler": None, "train_on_pred_boxes": True,
            "mask_head": {"name": "PointRendMaskHead", "coarse_conv_dim": 8, "coarse_fc_dim": 16, "point_fc_dim": 8,
                          "train_num_points": 20, **mask_knobs},
            "box_predictor": {"name": "FastRCNNOutputLayers", "test_score_thresh": 0.0, "test_detections_per_img": 5}}
    return ROI_HEADS.build(spec, input_shape={"p2": ShapeSpec(channels=8, stride=4)})


def _targets(polygons: bool):
    boxes = torch.tensor([[10.0, 10, 60, 60], [50.0, 40, 90, 95]])
    if polygons:
        masks = PolygonMasks([[b[[0, 1, 2, 1, 2, 3, 0, 3]].numpy()] for b in boxes])
    else:
        m = torch.zeros(2, 100, 100, dtype=torch.bool)
        m[0, 10:60, 10:60] = m[1, 40:95, 50:90] = True
        masks = BitMasks(m)
    return Instances((100, 100), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([0, 2]), gt_masks=masks)


@pytest.mark.parametrize("polygons", [False, True], ids=["bitmask", "polygon"])
def test_training_gives_coarse_and_point_losses(polygons):
    torch.manual_seed(0)
    heads = _heads().train()
    features = {"p2": torch.randn(1, 8, 25, 25, requires_grad=True)}
    proposals = Instances((100, 100), proposal_boxes=Boxes(torch.tensor([[12.0, 8, 58, 66], [0.0, 0, 30, 30]])),
                          objectness_logits=torch.zeros(2))
    with EventStorage() as storage:
        _, losses = heads(None, features, [proposals], [_targets(polygons)])
    assert {"loss_mask", "loss_mask_point"} <= set(losses)
    assert losses["loss_mask_point"].item() == pytest.approx(np.log(2), abs=0.05)  # logits ~0 at init
    assert "point/accuracy" in storage.latest()
    sum(losses.values()).backward()
    assert heads.mask_head.point_head.fc1.weight.grad is not None and features["p2"].grad is not None


def test_inference_subdivides_to_the_final_grid():
    torch.manual_seed(0)
    heads = _heads(coarse_side=7, subdivision_steps=5, subdivision_num_points=784).eval()
    proposals = Instances((100, 100), proposal_boxes=Boxes(torch.tensor([[12.0, 8, 58, 66], [40.0, 30, 90, 90]])),
                          objectness_logits=torch.zeros(2))
    with torch.no_grad():
        (out,), _ = heads(None, {"p2": torch.randn(1, 8, 25, 25)}, [proposals])
    assert len(out) == 5 and out.pred_masks.shape == (5, 1, 224, 224)
    assert ((out.pred_masks >= 0) & (out.pred_masks <= 1)).all()
    # a step whose points would cover the whole grid is folded into a finer start grid
    few = _heads(coarse_side=7, subdivision_steps=1, subdivision_num_points=196).eval()
    assert (few.mask_head.init_resolution, few.mask_head.subdivision_steps) == (14, 0)
    with torch.no_grad():
        (a,), _ = few(None, {"p2": torch.ones(1, 8, 25, 25)}, [proposals])
    assert a.pred_masks.shape[-2:] == (14, 14)


def test_no_detections_gives_empty_masks():
    heads = _heads().eval()
    heads.box_predictor.test_score_thresh = 1.0
    proposals = Instances((100, 100), proposal_boxes=Boxes(torch.tensor([[12.0, 8, 58, 66]])), objectness_logits=torch.zeros(1))
    with torch.no_grad():
        (out,), _ = heads(None, {"p2": torch.randn(1, 8, 25, 25)}, [proposals])
    assert len(out) == 0 and out.pred_masks.shape[0] == 0


def test_unknown_point_feature_is_one_message():
    with pytest.raises(ConfigError, match=r"model\.roi_heads\.mask_head\.point_in_features has 'p3'"):
        _heads(point_in_features=["p3"])


def test_it_is_a_feature_map_head():
    with pytest.raises(ConfigError, match=r"PointRendMaskHead reads the feature maps.*mask_pooler=null"):
        ROI_HEADS.build({"name": "StandardROIHeads", "in_features": ["p2"], "mask_head": "PointRendMaskHead"},
                        input_shape={"p2": ShapeSpec(channels=8, stride=4)})
    assert "PointRendMaskHead" in MASK_HEADS.names()
