"""The mask-branch seam: a head that reads the feature maps (``mask_pooler: null``), the checks that
pair a head with the right input, and the labelling part (keep-all mode used by cascades)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import nn

from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.modeling.matcher import Matcher
from framework.modeling.roi_heads import label_proposals
from framework.registry import MASK_HEADS
from framework.structures import Instances

from tests.modeling.test_roi_heads import _features, _heads, _proposals, _targets

K = 3


class _FeatureMapHead(nn.Module):
    """Records what it is given; predicts a constant mask from the mean of the finest map in each box."""

    def __init__(self, input_shape: Mapping[str, ShapeSpec], num_classes: int, *, side: int = 6):
        super().__init__()
        self.shapes = dict(input_shape)
        self.side = side
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[dict, list[Instances]]] = []

    def forward(self, features, instances):
        self.calls.append(({k: tuple(v.shape) for k, v in features.items()}, instances))
        n = sum(len(i) for i in instances)
        x = next(iter(features.values())).mean() * self.scale
        logits = x.expand(n, 1, self.side, self.side)
        if self.training:
            return {"loss_mask_map": logits.sum() * 0 + self.scale}
        for p, inst in zip(logits.sigmoid().split([len(i) for i in instances]), instances):
            inst.pred_masks = p
        return instances


@pytest.fixture(autouse=True)
def _registered():
    MASK_HEADS.register(_FeatureMapHead, name="TestFeatureMapHead")
    yield
    MASK_HEADS._obj_map.pop("TestFeatureMapHead")


def test_feature_map_head_gets_the_maps_by_name_and_the_labelled_foreground():
    heads = _heads(mask_head="TestFeatureMapHead", mask_pooler=None).train()
    assert heads.mask_pooler is None and heads.mask_head.shapes == {"p2": ShapeSpec(channels=4, stride=4)}
    _, losses = heads(None, _features(), [_proposals()], [_targets()])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask_map"}
    (shapes, instances), = heads.mask_head.calls
    assert shapes == {"p2": (1, 4, 25, 25)}
    # the foreground of the sampled proposals, with their matched gt (5 fg: see test_roi_heads)
    (fg,) = instances
    assert len(fg) == 5 and fg.image_size == (100, 100)
    assert sorted(fg.gt_classes.tolist()) == [0, 0, 2, 2, 2]
    assert fg.has("gt_masks") and fg.has("proposal_boxes")


def test_feature_map_head_at_inference_sets_pred_masks():
    heads = _heads(mask_head="TestFeatureMapHead", mask_pooler=None,
                   box_predictor={"name": "FastRCNNOutputLayers", "test_score_thresh": 0.0}).eval()
    with torch.no_grad():
        (out,), _ = heads(None, _features(), [_proposals()])
    assert len(out) > 0 and out.pred_masks.shape == (len(out), 1, 6, 6)
    (_, (seen,)), = heads.mask_head.calls
    assert seen.has("pred_boxes") and seen.has("pred_classes")


def test_pooled_head_with_a_null_pooler_is_one_message():
    with pytest.raises(ConfigError, match=r"model\.roi_heads\.mask_pooler is null.*MaskRCNNConvUpsampleHead takes pooled"):
        _heads(mask_head="MaskRCNNConvUpsampleHead", mask_pooler=None)


def test_feature_map_head_with_a_pooler_is_one_message():
    with pytest.raises(ConfigError, match=r"TestFeatureMapHead reads the feature maps.*set model\.roi_heads\.mask_pooler=null"):
        _heads(mask_head="TestFeatureMapHead")


def test_unknown_mask_head_names_the_key():
    with pytest.raises(ConfigError, match=r"roi_heads\.mask_head.*Did you mean 'TestFeatureMapHead'"):
        _heads(mask_head="TestFeatureMapHeed", mask_pooler=None)


def test_label_proposals_keep_all_keeps_order_and_counts():
    # p0..p4 of test_roi_heads against its two gts at IoU 0.5: classes 2, 2, bg, 0, bg
    labelled, num_fg, num_bg = label_proposals(
        [_proposals()], [_targets()], matcher=Matcher([0.5], [0, 1]), num_classes=K
    )
    (p,) = labelled
    assert p.gt_classes.tolist() == [2, 2, K, 0, K] and (num_fg, num_bg) == ([3], [2])
    assert p.proposal_boxes.tensor.equal(_proposals().proposal_boxes.tensor)
    # each proposal carries its matched gt's box (the nearest for background)
    assert p.gt_boxes.tensor[3].tolist() == [50.0, 50, 70, 70]
    # stricter matcher (Cascade's 0.7 stage): p1 (IoU 0.5) and p3 (0.667) become background
    labelled, num_fg, _ = label_proposals([_proposals()], [_targets()], matcher=Matcher([0.7], [0, 1]), num_classes=K)
    assert labelled[0].gt_classes.tolist() == [2, K, K, K, K] and num_fg == [1]


def test_label_proposals_without_gt_is_all_background():
    empty = Instances((100, 100), gt_boxes=_targets().gt_boxes[:0], gt_classes=torch.zeros(0, dtype=torch.long))
    (p,), num_fg, num_bg = label_proposals([_proposals()], [empty], matcher=Matcher([0.5], [0, 1]), num_classes=K)
    assert p.gt_classes.tolist() == [K] * 5 and not p.has("gt_boxes") and (num_fg, num_bg) == ([0], [5])


def test_train_on_pred_boxes_hands_the_mask_branch_the_regressed_boxes():
    torch.manual_seed(0)
    heads = _heads(mask_head="TestFeatureMapHead", mask_pooler=None, train_on_pred_boxes=True).train()
    for p in heads.box_predictor.bbox_pred.parameters():
        p.data.normal_(0, 0.5)  # regression far from the identity
    seen_boxes = []
    predict = heads.box_predictor.predict_boxes_for_gt_classes

    def recording(predictions, proposals):
        out = predict(predictions, proposals)
        seen_boxes.append((torch.cat([p.proposal_boxes.tensor for p in proposals]).clone(), torch.cat(out), proposals))
        return out

    heads.box_predictor.predict_boxes_for_gt_classes = recording
    heads(None, _features(), [_proposals()], [_targets()])
    (before, regressed, sampled), = seen_boxes
    (_, (fg,)), = heads.mask_head.calls
    keep = (sampled[0].gt_classes >= 0) & (sampled[0].gt_classes < K)
    assert not torch.allclose(before[keep], regressed[keep])
    torch.testing.assert_close(fg.proposal_boxes.tensor, regressed[keep])
