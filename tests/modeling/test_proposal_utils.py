"""find_top_rpn_proposals and add_ground_truth_to_proposals on tiny hand-made inputs."""

import logging
import math

import pytest
import torch

from framework.modeling.proposal_generator.proposal_utils import (
    add_ground_truth_to_proposals,
    find_top_rpn_proposals,
)
from framework.structures import Boxes, Instances
from framework.utils.events import EventStorage


def _top(proposals, logits, image_sizes=((100, 100),), *, nms=0.7, pre=1000, post=1000, min_size=0.0, training=False):
    """Proposals/logits: per level, one image -> add the batch dim."""
    return find_top_rpn_proposals(
        [torch.tensor(p, dtype=torch.float32)[None] for p in proposals],
        [torch.tensor(s, dtype=torch.float32)[None] for s in logits],
        list(image_sizes),
        nms_thresh=nms,
        pre_nms_topk=pre,
        post_nms_topk=post,
        min_box_size=min_size,
        training=training,
    )


# Pairwise disjoint boxes (IoU 0), so that NMS never interferes unless a test wants it to.
def _box(i):
    return [20.0 * i, 0.0, 20.0 * i + 10.0, 10.0]


def test_pre_nms_topk_is_per_level_and_output_sorted_across_levels():
    # level 0 logits [0.1, 0.9, 0.5], pre_nms_topk=2 -> keeps 0.9 (box 1) and 0.5 (box 2), drops 0.1;
    # level 1 logits [0.7, 0.2] -> both kept (k = min(2, 2)).
    (res,) = _top([[_box(0), _box(1), _box(2)], [_box(3), _box(4)]], [[0.1, 0.9, 0.5], [0.7, 0.2]], pre=2)
    torch.testing.assert_close(res.objectness_logits, torch.tensor([0.9, 0.7, 0.5, 0.2]))
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.tensor([_box(1), _box(3), _box(2), _box(4)]))
    assert res.image_size == (100, 100)


def test_post_nms_topk_counts_over_all_levels():
    # same input, post_nms_topk=3: the 3 best of {0.9, 0.5 | 0.7, 0.2} whatever their level
    (res,) = _top([[_box(0), _box(1), _box(2)], [_box(3), _box(4)]], [[0.1, 0.9, 0.5], [0.7, 0.2]], pre=2, post=3)
    torch.testing.assert_close(res.objectness_logits, torch.tensor([0.9, 0.7, 0.5]))


def test_boxes_are_clipped_to_the_image_size():
    # image (h=100, w=50): x into [0, 50], y into [0, 100]
    (res,) = _top([[[-5.0, -5.0, 20.0, 200.0], [40.0, 10.0, 70.0, 30.0]]], [[2.0, 1.0]], image_sizes=[(100, 50)])
    expected = torch.tensor([[0.0, 0.0, 20.0, 100.0], [40.0, 10.0, 50.0, 30.0]])
    torch.testing.assert_close(res.proposal_boxes.tensor, expected)


def test_min_box_size_drops_boxes_with_a_side_not_above_it():
    # sides: (2, 20) -> dropped (2 is not > 2); (3, 20) kept; (20, 2) dropped; a box entirely left of the
    # image becomes [0, 0, 0, 10] after clipping -> width 0 -> dropped
    boxes = [[10.0, 10.0, 12.0, 30.0], [30.0, 10.0, 33.0, 30.0], [50.0, 10.0, 70.0, 12.0], [-20.0, 0.0, -10.0, 10.0]]
    (res,) = _top([boxes], [[4.0, 3.0, 2.0, 1.0]], min_size=2.0)
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.tensor([[30.0, 10.0, 33.0, 30.0]]))
    torch.testing.assert_close(res.objectness_logits, torch.tensor([3.0]))


def test_empty_boxes_dropped_even_with_min_size_zero():
    # width 0 is not > 0
    (res,) = _top([[[5.0, 5.0, 5.0, 9.0], _box(1)]], [[2.0, 1.0]])
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.tensor([_box(1)]))


def test_nms_within_a_level_but_not_across_levels():
    a = [0.0, 0.0, 10.0, 10.0]
    b = [1.0, 0.0, 11.0, 10.0]  # IoU(a, b) = 90 / (100 + 100 - 90) = 0.818 > 0.7
    # level 0: a (0.9) suppresses b (0.8); level 1: a copy of a (0.5) survives: NMS is per level
    (res,) = _top([[a, b], [a]], [[0.9, 0.8], [0.5]])
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.tensor([a, a]))
    torch.testing.assert_close(res.objectness_logits, torch.tensor([0.9, 0.5]))


def test_nms_threshold_is_strict():
    # IoU 0.818 is not > 0.85, so both boxes of the same level stay
    (res,) = _top([[[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]]], [[0.9, 0.8]], nms=0.85)
    assert len(res) == 2


def test_images_are_independent():
    # level 0 of 2 images; image 1 has the scores reversed and a smaller image (clips box 1 to x <= 25)
    props = torch.tensor([[_box(0), _box(1)], [_box(0), _box(1)]])
    logits = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    r0, r1 = find_top_rpn_proposals(
        [props], [logits], [(100, 100), (100, 25)],
        nms_thresh=0.7, pre_nms_topk=10, post_nms_topk=10, min_box_size=0.0, training=False,
    )
    torch.testing.assert_close(r0.proposal_boxes.tensor, torch.tensor([_box(0), _box(1)]))
    torch.testing.assert_close(r1.proposal_boxes.tensor, torch.tensor([[20.0, 0.0, 25.0, 10.0], _box(0)]))
    assert r1.image_size == (100, 25)


@pytest.mark.parametrize("bad", ["box", "score"])
def test_non_finite_raises_in_training_and_is_dropped_at_test(bad, caplog):
    boxes = [_box(0), _box(1), _box(2)]
    logits = [3.0, 2.0, 1.0]
    if bad == "box":
        boxes[1] = [float("nan"), 0.0, 10.0, 10.0]
    else:
        logits[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"in training.*image 0 \(100x100\): 1 of 3 \(level 0: 1 of 3\)"):
        _top([boxes], [logits], training=True)
    with caplog.at_level(logging.WARNING, logger="framework.modeling.proposal_generator.proposal_utils"):
        (res,) = _top([boxes], [logits], training=False)
    torch.testing.assert_close(res.proposal_boxes.tensor, torch.tensor([_box(0), _box(2)]))
    torch.testing.assert_close(res.objectness_logits, torch.tensor([3.0, 1.0]))
    assert "left out 1 proposal candidates with NaN or infinite boxes or scores" in caplog.text


def test_non_finite_candidates_are_counted_per_image_and_level_and_put_in_the_storage(caplog):
    # 2 images, levels "p2" (3 candidates, pre_nms_topk keeps all) and "p3" (2 candidates).
    # Image 0: one NaN box on p2, one -inf score on p3; image 1: all finite; image 2: a NaN score on p3.
    nan, inf = float("nan"), float("inf")
    p2 = torch.tensor([[_box(0), [nan, 0.0, 1.0, 1.0], _box(2)], [_box(0), _box(1), _box(2)], [_box(0), _box(1), _box(2)]])
    p3 = torch.tensor([[_box(3), _box(4)], [_box(3), _box(4)], [_box(3), _box(4)]])
    s2 = torch.tensor([[3.0, 2.5, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    s3 = torch.tensor([[0.5, -inf], [0.5, 0.4], [nan, 0.4]])
    with EventStorage() as storage, caplog.at_level(logging.WARNING):
        results = find_top_rpn_proposals(
            [p2, p3], [s2, s3], [(100, 100), (100, 100), (80, 120)], nms_thresh=0.7, pre_nms_topk=10,
            post_nms_topk=10, min_box_size=0.0, training=False, level_names=["p2", "p3"],
        )
        assert storage.latest()["rpn/nonfinite_proposals"] == (3.0, 0)
    assert [len(r) for r in results] == [3, 5, 4]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "RPN: left out 3 proposal candidates with NaN or infinite boxes or scores, in 2 of 3 images: "
        "image 0 (100x100): 2 of 5 (p2: 1 of 3, p3: 1 of 2); image 2 (80x120): 1 of 5 (p3: 1 of 2)"
    ]


def test_finite_candidates_log_and_put_nothing(caplog):
    with EventStorage() as storage, caplog.at_level(logging.WARNING):
        _top([[_box(0), _box(1)]], [[2.0, 1.0]])
        assert "rpn/nonfinite_proposals" not in storage.latest()
    assert caplog.records == []


# ---------------------------------------------------------------------------- add_ground_truth_to_proposals
def _proposals():
    return Instances(
        (50, 60),
        proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 9.0, 9.0]])),
        objectness_logits=torch.tensor([1.0, 2.0]),
    )


def test_gt_appended_last_with_near_certain_logit():
    gt = Instances((50, 60), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 20.0, 30.0]])), gt_classes=torch.tensor([4]))
    (out,) = add_ground_truth_to_proposals([gt], [_proposals()])
    torch.testing.assert_close(
        out.proposal_boxes.tensor, torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 9.0, 9.0], [10.0, 10.0, 20.0, 30.0]])
    )
    # logit of p = 1 - 1e-10: log(p / (1 - p)) = log(1e10) + log(1 - 1e-10) ~= 10 * ln(10) = 23.0259
    assert out.objectness_logits[:2].tolist() == [1.0, 2.0]
    assert out.objectness_logits[2].item() == pytest.approx(10 * math.log(10), abs=1e-4)
    assert out.objectness_logits[2].item() == pytest.approx(23.0259, abs=1e-4)
    # proposals without gt_* fields keep exactly their two fields
    assert set(out.get_fields()) == {"proposal_boxes", "objectness_logits"}
    assert out.image_size == (50, 60)


def test_gt_fields_the_proposals_carry_are_appended_too():
    props = _proposals()
    props.gt_classes = torch.tensor([7, 7])
    gt = Instances((50, 60), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 20.0, 30.0], [0.0, 0.0, 1.0, 1.0]])),
                   gt_classes=torch.tensor([4, 5]))
    (out,) = add_ground_truth_to_proposals([gt], [props])
    assert out.gt_classes.tolist() == [7, 7, 4, 5]
    assert len(out) == 4


def test_no_gt_leaves_proposals_unchanged_per_image():
    empty = Instances((50, 60), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
    one = Instances((50, 60), gt_boxes=Boxes(torch.tensor([[2.0, 2.0, 4.0, 4.0]])), gt_classes=torch.tensor([0]))
    out0, out1 = add_ground_truth_to_proposals([empty, one], [_proposals(), _proposals()])
    assert len(out0) == 2 and len(out1) == 3
    torch.testing.assert_close(out0.proposal_boxes.tensor, _proposals().proposal_boxes.tensor)
