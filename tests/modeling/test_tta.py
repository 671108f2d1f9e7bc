"""Test-time augmentation (framework.modeling.tta): the views and box mapping, the merge and the
mask average by hand; on real (untrained) models, including the project variants, a single view
without flip equals plain inference, mirrored input gives mirrored output, an image without
detections and images of odd sizes give valid Instances, and models lacking the interface fail
with a message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from framework.config.compose import compose
from framework.data.augmentations.geometry import resize_image_pil
from framework.engine.builders import build_model
from framework.errors import ConfigError
from framework.modeling.tta.merge import average_over_views, merge_detections
from framework.modeling.tta.views import View, boxes_to_original, boxes_to_view, make_views, view_image
from framework.registry import TEST_TIME_AUGMENTATIONS
from framework.structures import Boxes, Instances

# ---------------------------------------------------------------------------------------------- views


def test_views_come_per_size_then_mirrored_and_respect_max_size():
    assert make_views(100, 200, min_sizes=[50, 0], max_size=1000, flip=True) == [
        View((50, 100), False), View((50, 100), True), View((100, 200), False), View((100, 200), True)]
    # 200 on the shorter side would make the longer 800 > 500: the longer side becomes 500
    assert make_views(100, 400, min_sizes=[200], max_size=500, flip=False) == [View((125, 500), False)]


def test_boxes_map_from_a_mirrored_half_size_view_by_hand():
    view, original = View((50, 100), True), (100, 200)
    in_view = torch.tensor([[10.0, 5.0, 30.0, 20.0]])
    # unmirrored in the 100 px wide view: x in [100 - 30, 100 - 10]; then x2 in both directions
    expected = torch.tensor([[140.0, 10.0, 180.0, 40.0]])
    assert torch.equal(boxes_to_original(in_view, view, original), expected)
    assert torch.equal(boxes_to_view(expected, view, original), in_view)


def test_view_image_resizes_as_the_test_pipeline_then_mirrors():
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    assert torch.equal(view_image(image, View((30, 40), False)), image)
    assert torch.equal(view_image(image, View((30, 40), True)), image.flip(-1))
    assert torch.equal(view_image(image, View((15, 20), True)), resize_image_pil(image, (15, 20)).flip(-1))
    resized_float = view_image(image.float(), View((15, 20), False))
    assert resized_float.shape == (3, 15, 20) and resized_float.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- merge


def test_merge_suppresses_overlaps_of_one_class_only_and_keeps_the_best():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],      # view A, class 0, 0.9
        [50.0, 50.0, 60.0, 60.0],    # view A, class 1, 0.8
        [1.0, 0.0, 11.0, 10.0],      # view B, class 0, 0.6: IoU 90/110 with the first -> suppressed
        [0.0, 0.0, 10.0, 10.0],      # view B, class 1, 0.7: same box as the first, other class -> kept
        [100.0, 100.0, 130.0, 130.0],  # view B, class 0, 0.3: clipped to the 110 x 120 image
    ])
    scores = torch.tensor([0.9, 0.8, 0.6, 0.7, 0.3])
    classes = torch.tensor([0, 1, 0, 1, 0])
    merged = merge_detections(boxes, scores, classes, (110, 120), nms_thresh=0.5, max_detections=100)
    assert merged.image_size == (110, 120)
    assert torch.equal(merged.scores, torch.tensor([0.9, 0.8, 0.7, 0.3]))
    assert merged.pred_classes.tolist() == [0, 1, 1, 0]
    assert torch.equal(merged.pred_boxes.tensor, torch.tensor([
        [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 110.0]]))
    capped = merge_detections(boxes, scores, classes, (110, 120), nms_thresh=0.5, max_detections=2)
    assert torch.equal(capped.scores, torch.tensor([0.9, 0.8]))
    empty = merge_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), (5, 6),
                             nms_thresh=0.5, max_detections=100)
    assert len(empty) == 0 and empty.image_size == (5, 6)


def _mask_output(mask: list, **fields) -> Instances:
    return Instances((4, 4), pred_masks=torch.tensor(mask)[None, None], **fields)


def test_masks_of_a_mirrored_view_are_mirrored_back_then_averaged_with_changed_scalars():
    merged = Instances((8, 8), pred_boxes=Boxes(torch.tensor([[1.0, 1.0, 5.0, 5.0]])),
                       pred_classes=torch.tensor([2]), scores=torch.tensor([0.5]))
    left_column = [[1.0, 0.0], [1.0, 0.0]]
    outputs = [
        _mask_output(left_column, scores=torch.tensor([0.5]), mask_iou=torch.tensor([0.2])),
        _mask_output(left_column, scores=torch.tensor([0.5]), mask_iou=torch.tensor([0.6])),  # mirrored view
    ]
    out = average_over_views(outputs, [View((4, 4), False), View((4, 4), True)], merged)
    assert torch.equal(out.pred_masks, torch.full((1, 1, 2, 2), 0.5))
    assert out.scores is merged.scores  # not changed by the mask pass: kept as merged
    assert torch.allclose(out.mask_iou, torch.tensor([0.4]))
    rescored = [_mask_output(left_column, scores=torch.tensor([s])) for s in (0.2, 0.4)]
    assert torch.allclose(average_over_views(rescored, [View((4, 4), False)] * 2, merged).scores, torch.tensor([0.3]))
    with pytest.raises(RuntimeError, match="'pred_keypoints', which is not one float per detection"):
        average_over_views([_mask_output(left_column, pred_keypoints=torch.zeros(1, 17, 3))], [View((4, 4), False)],
                           merged)
    with pytest.raises(RuntimeError, match=r"returned \[0\] detections per view for 1 given"):
        average_over_views([Instances((4, 4), pred_masks=torch.zeros(0, 1, 2, 2))], [View((4, 4), False)], merged)


# ---------------------------------------------------------------------------------------------- real models

#: Small inputs and few proposals and detections keep each model call at a fraction of a second.
SMALL = ["input.test.augmentations.0.short_edge_length=[96]", "input.test.augmentations.0.max_size=160",
         "model.roi_heads.box_predictor.test_detections_per_img=10", "model.rpn.post_nms_topk_test=50"]


@pytest.fixture(scope="module")
def models():
    """``models(preset, *overrides)``: an untrained model (seeded), built once per module and arguments;
    untrained box heads give near-uniform scores, so every image has its 10 detections."""
    cache: dict = {}

    def get(*overrides: str) -> nn.Module:
        if overrides not in cache:
            torch.manual_seed(0)
            cache[overrides] = build_model(compose([*SMALL, *overrides]), torch.device("cpu")).eval()
        return cache[overrides]

    return get


@pytest.fixture(scope="module")
def image():
    """A test input as the test loader gives it: the first validation image resized to 96."""
    from framework.data import get_dataset
    from framework.engine.builders import build_mapper

    return build_mapper(compose(SMALL), "test")(get_dataset("synthetic_val")[0])


def _tta(model: nn.Module, **knobs) -> nn.Module:
    return TEST_TIME_AUGMENTATIONS.build({"name": "MultiScaleFlip", **knobs}, model=model).eval()


def _assert_same_detections(a: Instances, b: Instances) -> None:
    """Boxes and classes equal (the view's boxes are mapped back as plain inference maps them);
    the mask branch gets the merged boxes mapped into the view again, a round trip that moves them
    by float rounding: scores a mask branch rescores agree to 1e-5, pasted masks on 99.9% of the
    pixels (a pixel at the threshold may flip)."""
    assert a.image_size == b.image_size and sorted(a.get_fields()) == sorted(b.get_fields())
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)
    if a.has("pred_masks"):
        assert (a.pred_masks == b.pred_masks).float().mean() > 0.999


# The framework's Mask R-CNN and Faster R-CNN, and the projects' RoI-heads variants: cascade stages,
# a mask branch that rescores (Mask Scoring R-CNN), a point-based mask head reading the feature maps.
VARIANTS = [(), ("model.roi_heads.mask_head=null",), ("model=cascade_mask_rcnn_R_18_FPN_quick",),
            ("model=mask_scoring_rcnn_R_18_FPN_quick",), ("model=point_rend_R_18_FPN_quick",)]


@pytest.mark.parametrize("variant", VARIANTS, ids=["mask_rcnn", "faster_rcnn", "cascade", "mask_scoring", "point_rend"])
def test_one_view_without_flip_equals_plain_inference(models, image, variant):
    model = models(*variant)
    plain = model([image])[0]["instances"]
    assert len(plain) == 10
    # 96: the input's shorter side, so the view is the input itself (min_sizes=[0] would be too)
    _assert_same_detections(_tta(model, min_sizes=[96], flip=False)([image])[0]["instances"], plain)


def test_a_mirrored_image_gives_the_mirrored_detections(models, image):
    """Flip-only TTA sees the same two views of an image and of its mirror, so its output for the
    mirror is the mirror of its output: boxes mirrored back, masks mirrored back before averaging."""
    tta = _tta(models(), min_sizes=[0], flip=True)
    out = tta([image])[0]["instances"]
    mirrored = tta([{**image, "image": image["image"].flip(-1)}])[0]["instances"]
    width = image["width"]
    assert len(out) == len(mirrored) > 10  # the views' detections differ: more than one view's worth survive
    order = torch.argsort(out.scores, descending=True, stable=True)
    mirrored_order = torch.argsort(mirrored.scores, descending=True, stable=True)
    assert torch.equal(out.scores[order], mirrored.scores[mirrored_order])
    assert torch.equal(out.pred_classes[order], mirrored.pred_classes[mirrored_order])
    x1, y1, x2, y2 = out.pred_boxes.tensor[order].unbind(1)
    assert torch.allclose(torch.stack([width - x2, y1, width - x1, y2], 1),
                          mirrored.pred_boxes.tensor[mirrored_order], atol=1e-3)
    # pasting rounds at pixel edges: a pixel whose probability sits at the threshold may differ
    same = out.pred_masks[order].flip(-1) == mirrored.pred_masks[mirrored_order]
    assert same.float().mean() > 0.999


def test_an_image_without_detections_gives_empty_valid_instances(models, image):
    model = models()
    predictor = model.roi_heads.box_predictor
    predictor.test_score_thresh = 1.0  # no score passes
    try:
        plain = model([image])[0]["instances"]
        out = _tta(model, min_sizes=[0], flip=True)([image])[0]["instances"]
    finally:
        predictor.test_score_thresh = 0.05
    assert len(plain) == len(out) == 0
    assert out.image_size == (image["height"], image["width"])
    assert sorted(out.get_fields()) == sorted(plain.get_fields())
    assert out.pred_masks.shape == (0, image["height"], image["width"]) and out.pred_boxes.tensor.shape == (0, 4)


def test_images_of_odd_sizes_give_valid_instances(models):
    model = models()
    torch.manual_seed(1)
    inputs = [{"image": torch.randint(0, 256, (3, 37, 91), dtype=torch.uint8), "height": 75, "width": 181},
              {"image": torch.randint(0, 256, (3, 101, 53), dtype=torch.uint8)}]  # no height/width: the image's
    outputs = _tta(model, min_sizes=[33, 64], max_size=101, flip=True, detections_per_image=15)(inputs)
    for x, out in zip(inputs, outputs):
        r = out["instances"]
        h, w = x.get("height", 101), x.get("width", 53)
        assert r.image_size == (h, w) and 10 < len(r) <= 15
        boxes = r.pred_boxes.tensor
        assert boxes.shape == (len(r), 4) and torch.isfinite(boxes).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((r.scores > 0) & (r.scores <= 1)).all() and r.pred_classes.dtype == torch.int64
        assert r.pred_masks.shape == (len(r), h, w) and r.pred_masks.dtype == torch.bool


def test_the_mask_branch_is_off_for_the_box_pass_and_back_on_after(models, image):
    model = models()
    seen = []
    hook = model.roi_heads.mask_head.register_forward_hook(lambda m, args, out: seen.append(len(args[1][0])))
    try:
        out = _tta(model, min_sizes=[0], flip=False)([image])[0]["instances"]
    finally:
        hook.remove()
    assert seen == [len(out)]  # not in the box pass: only on the merged detections
    assert model.roi_heads.mask_on


class _OldStyleModel(nn.Module):
    def inference(self, batched_inputs, do_postprocess=True):
        return []


class _SelfResizingModel(_OldStyleModel):
    output_fields = ("pred_boxes", "scores", "pred_classes")
    test_resize = (128, 192)

    def inference(self, batched_inputs, do_postprocess=True, *, detected_instances=None):
        return []

    def postprocess(self, instances, height, width):
        return instances


class _KeypointModel(_SelfResizingModel):
    output_fields = ("pred_boxes", "scores", "pred_classes", "pred_keypoints")
    test_resize = None


def test_a_model_without_the_interface_or_resizing_itself_is_refused_with_a_message():
    with pytest.raises(ConfigError, match=r"tta=MultiScaleFlip: the model _OldStyleModel .*detected_instances.*lacks "
                                          r"\['detected_instances'\]"):
        _tta(_OldStyleModel())
    with pytest.raises(ConfigError, match=r"model.test_resize=\[128, 192\] resizes every image inside the model"):
        _tta(_SelfResizingModel())
    with pytest.raises(ConfigError, match=r"_KeypointModel predicts \['pred_keypoints'\], which test-time augmentation "
                                          r"cannot map"):
        _tta(_KeypointModel())


@pytest.mark.parametrize("knob, value, message", [
    ("min_sizes", [], r"'tta.min_sizes': MultiScaleFlip needs a non-empty list"),
    ("min_sizes", [128, -1], r"'tta.min_sizes'"),
    ("max_size", 0, r"'tta.max_size': must be > 0, got 0"),
    ("nms_thresh", 1.5, r"'tta.nms_thresh': an IoU in \(0, 1\], got 1.5"),
])
def test_a_bad_knob_value_names_it(models, knob, value, message):
    with pytest.raises(ConfigError, match=message):
        _tta(models(), **{knob: value})
