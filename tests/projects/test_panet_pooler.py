"""PANetPooler (projects/panet_pooler): every RoI pooled from every FPN level, fused element-wise."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torchvision.ops import roi_align

from framework.config.compose import compose
from framework.errors import ConfigError
from framework.modeling.poolers import ROIAlignV2
from framework.registry import ROI_POOLERS
from framework.structures.boxes import Boxes
from projects.panet_pooler import PANetPooler, fuse_levels

FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)

#: 2 iterations on small images (tests/config/conftest.py SHORT_JOB); at test time fewer proposals and
#: detections, and a score threshold of 0 so the barely trained model still sends boxes to the mask pooler.
SHORT_JOB = ["train.max_iter=2", "lr_scheduler.steps=[]", "lr_scheduler.warmup_iters=1",
             "input.train.augmentations.0.short_edge_length=[128]", "input.test.augmentations.0.short_edge_length=[128]",
             "dataloader.train.num_workers=0",
             "dataloader.test.num_workers=0", "model.rpn.post_nms_topk_test=50",
             "model.roi_heads.box_predictor.test_detections_per_img=10", "model.roi_heads.box_predictor.test_score_thresh=0.0"]


@pytest.fixture
def first_val_images(tmp_path) -> list[str]:
    """Overrides that evaluate on the first 8 images of the built-in synthetic_val (a COCO json subset)."""
    from framework.data.synthetic import ensure_builtin_synthetic

    json_file, image_root = ensure_builtin_synthetic()["val"]
    coco = json.loads(json_file.read_text())
    coco["images"] = coco["images"][:8]
    kept = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    subset = tmp_path / "synthetic_val_first8.json"
    subset.write_text(json.dumps(coco))
    return ["dataset.test.name=synthetic_val_first8", f"dataset.test.json={subset}", f"dataset.test.image_root={image_root}"]


def _two_levels() -> list[torch.Tensor]:
    """Level 0 (stride 1, 8x8): value = column index x. Level 1 (stride 2, 4x4): value = 4 - x."""
    x0 = torch.arange(8.0).repeat(8, 1)[None, None]
    x1 = (4.0 - torch.arange(4.0)).repeat(4, 1)[None, None]
    return [x0, x1]


def _box() -> list[Boxes]:
    return [Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]]))]


# Box [2, 6], 2x2 bins, aligned (-0.5 px), 2 samples per bin side; a linear map averages to the bin centre.
#   level 0 (scale 1):   [1.5, 5.5] -> bin centres x = 2.5, 4.5 -> values 2.5, 4.5
#   level 1 (scale 1/2): [0.5, 2.5] -> bin centres x = 1.0, 2.0 -> values 4 - x = 3.0, 2.0
LEVEL0 = torch.tensor([[2.5, 4.5], [2.5, 4.5]])
LEVEL1 = torch.tensor([[3.0, 2.0], [3.0, 2.0]])


@pytest.mark.parametrize(
    "fusion, expected",
    [
        ("max", [[3.0, 4.5], [3.0, 4.5]]),  # left bin from the coarse level, right bin from the fine one
        ("sum", [[5.5, 6.5], [5.5, 6.5]]),
        ("mean", [[2.75, 3.25], [2.75, 3.25]]),
    ],
)
def test_fusion_on_two_levels_by_hand(fusion, expected):
    pooler = PANetPooler(2, (1.0, 0.5), fusion=fusion, sampling_ratio=2)
    out = pooler(_two_levels(), _box())
    torch.testing.assert_close(out, torch.tensor(expected)[None, None])


def test_per_level_hand_values_match_torchvision_and_differ_from_single_level_pooling():
    feats, rois = _two_levels(), torch.tensor([[0.0, 2.0, 2.0, 6.0, 6.0]])
    for feature, scale, by_hand in zip(feats, (1.0, 0.5), (LEVEL0, LEVEL1)):
        torch.testing.assert_close(roi_align(feature, rois, 2, scale, 2, aligned=True)[0, 0], by_hand)
    # FPN's rule sends this small box to level 0 alone: what PANet's max changes is the left bin
    single = ROIAlignV2(2, (1.0, 0.5), sampling_ratio=2)(feats, _box())
    torch.testing.assert_close(single[0, 0], LEVEL0)


@pytest.mark.parametrize("fusion", ["max", "sum", "mean"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_torchvision_roi_align_per_level_then_fused(fusion, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 64 // 2**i, 64 // 2**i, generator=g) for i in range(4)]  # image 256 x 256
    boxes = [Boxes(torch.tensor([[10.0, 20.0, 60.0, 90.0], [0.0, 0.0, 250.0, 200.0]])),
             Boxes(torch.tensor([[100.0, 30.0, 130.0, 50.0]]))]
    rois = torch.tensor([[0.0, 10, 20, 60, 90], [0.0, 0, 0, 250, 200], [1.0, 100, 30, 130, 50]])
    per_level = [roi_align(f, rois, (7, 7), s, sampling_ratio, aligned=True) for f, s in zip(feats, FPN_SCALES)]
    stacked = torch.stack(per_level)
    expected = {"max": stacked.amax(0), "sum": stacked.sum(0), "mean": stacked.mean(0)}[fusion]
    out = PANetPooler(7, FPN_SCALES, fusion=fusion, sampling_ratio=sampling_ratio)(feats, boxes)
    assert out.shape == (3, 3, 7, 7)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "fusion, grad_mass",
    # Every bilinear sample lies inside the map, so each output element hands a gradient of total 1
    # to the level(s) it came from: max gives each level the 2 elements it won, sum all 4 to each.
    [("max", (2.0, 2.0)), ("sum", (4.0, 4.0)), ("mean", (2.0, 2.0))],
)
def test_gradient_goes_where_the_fusion_says(fusion, grad_mass):
    feats = [f.requires_grad_() for f in _two_levels()]
    PANetPooler(2, (1.0, 0.5), fusion=fusion, sampling_ratio=2)(feats, _box()).sum().backward()
    assert tuple(f.grad.sum().item() for f in feats) == pytest.approx(grad_mass)
    if fusion == "max":  # the right column of bins is level 0's, the left level 1's
        assert feats[0].grad[..., :4].abs().sum() == 0 and feats[1].grad[..., 3:].abs().sum() == 0


@pytest.mark.parametrize("fusion", ["max", "sum", "mean"])
def test_gradients_reach_every_level(fusion):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 4, 64 // 2**i, 64 // 2**i, generator=g).requires_grad_() for i in range(4)]
    boxes = [Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0], [50.0, 60.0, 200.0, 250.0]]))]
    PANetPooler(7, FPN_SCALES, fusion=fusion)(feats, boxes).pow(2).sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    # the FPN rule would route both boxes to levels 2 and 3 only (sizes 32 and ~168 px)
    ref = [f.detach().clone().requires_grad_() for f in feats]
    ROIAlignV2(7, FPN_SCALES)(ref, boxes).pow(2).sum().backward()
    assert [f.grad.abs().sum().item() > 0 for f in ref] == [True, True, False, False]


def test_output_contract_non_square_empty_and_single_level():
    feats = [torch.randn(2, 5, 32 // 2**i, 32 // 2**i, requires_grad=True) for i in range(2)]
    pooler = PANetPooler((2, 3), (1 / 4, 1 / 8))
    out = pooler(feats, [Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]])), Boxes(torch.zeros(0, 4))])
    assert out.shape == (1, 5, 2, 3)
    empty = pooler(feats, [Boxes(torch.zeros(0, 4))] * 2)
    assert empty.shape == (0, 5, 2, 3) and empty.requires_grad  # an empty batch does not break backward
    assert pooler([torch.zeros(0, 5, 8, 8)] * 2, []).shape == (0, 5, 2, 3)
    # one level: every fusion is the identity, i.e. ROIAlignV2
    single = [feats[0].detach()[:1]]
    box = [Boxes(torch.tensor([[1.0, 3.0, 20.0, 27.0]]))]
    for fusion in ("max", "sum", "mean"):
        torch.testing.assert_close(PANetPooler(7, (1 / 4,), fusion=fusion)(single, box),
                                   ROIAlignV2(7, (1 / 4,))(single, box))


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match=r"fusion='avg' is not one of \['max', 'sum', 'mean'\]"):
        PANetPooler(7, FPN_SCALES, fusion="avg")
    with pytest.raises(ConfigError, match="sampling_ratio must be >= 0"):
        PANetPooler(7, FPN_SCALES, sampling_ratio=-1)
    with pytest.raises(ValueError, match="built for 4 levels"):
        PANetPooler(7, FPN_SCALES)([torch.zeros(1, 1, 8, 8)], [Boxes(torch.zeros(0, 4))])
    with pytest.raises(ValueError, match="at least one level"):
        fuse_levels([], "max")


def test_registry_knobs_and_config_groups():
    p = ROI_POOLERS.build({"name": "PANetPooler", "fusion": "sum", "sampling_ratio": 2}, output_size=14, scales=FPN_SCALES)
    assert isinstance(p, PANetPooler) and p.aligned and (p.fusion, p.sampling_ratio, p.output_size) == ("sum", 2, (14, 14))
    # the level-assignment knobs of the base do nothing here, so they are not knobs
    with pytest.raises(ConfigError, match="canonical_level"):
        ROI_POOLERS.build({"name": "PANetPooler", "canonical_level": 3}, output_size=7, scales=FPN_SCALES)

    for preset in ([], ["model=mask_rcnn_R_50_FPN"]):
        cfg = compose(preset + ["model/roi_pooler=PANetPooler", "model.roi_heads.mask_pooler.fusion=sum"])
        heads = cfg.model.roi_heads
        assert (heads.box_pooler.name, heads.box_pooler.fusion) == ("PANetPooler", "max")
        assert (heads.mask_pooler.name, heads.mask_pooler.fusion) == ("PANetPooler", "sum")
    with pytest.raises(ConfigError, match=r"model\.roi_heads\.box_pooler\.fusion': 'avg' is not one of"):
        compose(["model/roi_heads/box_pooler=PANetPooler", "model.roi_heads.box_pooler.fusion=avg"])


def test_default_job_trains_and_evaluates_with_both_poolers(tmp_path, monkeypatch, first_val_images):
    """The real engine, 2 iterations + COCO evaluation; every pooler call it makes is recorded, and
    the first of each kind (box/mask, train/eval) is recomputed from the features it was given."""
    from framework.engine.run import run

    calls: dict[tuple[bool, tuple[int, int]], tuple] = {}
    forward = PANetPooler.forward

    def recording_forward(self, x, box_lists):
        out = forward(self, x, box_lists)
        key = (self.training, self.output_size)
        if key not in calls and len(out):
            calls[key] = (self.fusion, [f.detach().clone() for f in x],
                          [b.tensor.detach().clone() for b in box_lists], out.detach().clone(), self.scales)
        return out

    monkeypatch.setattr(PANetPooler, "forward", recording_forward)
    cfg = compose(SHORT_JOB + first_val_images + ["model/roi_heads/box_pooler=PANetPooler", "model/roi_heads/mask_pooler=PANetPooler",
                               "model.roi_heads.mask_pooler.fusion=sum"])
    run_dir = tmp_path / "run"
    run(cfg, output_dir=run_dir)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 2
    results = json.loads((run_dir / "inference" / "coco_instances_results.json").read_text())
    assert len({r["image_id"] for r in results}) == 8 and all("segmentation" in r for r in results)
    for key in ("bbox/AP", "segm/AP"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])
    written = (run_dir / "config.yaml").read_text()
    assert written.count("name: PANetPooler") == 2

    # box pooler (7x7, max) and mask pooler (14x14, sum), in training and at evaluation
    assert set(calls) == {(True, (7, 7)), (False, (7, 7)), (True, (14, 14)), (False, (14, 14))}
    for (training, size), (fusion, feats, boxes, out, scales) in calls.items():
        assert fusion == ("max" if size == (7, 7) else "sum")
        assert len(feats) == 4 and out.shape == (sum(len(b) for b in boxes), feats[0].shape[1], *size)
        rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
        # Training runs under the default train.amp=auto: bf16 features on a CPU with native bf16,
        # pooled in float32 and rounded back per level (torchvision's autocast rule), then fused
        # level after level in the features' dtype.
        per_level = [roi_align(f.float(), rois, size, s, 0, aligned=True).to(f.dtype) for f, s in zip(feats, scales)]
        expected = functools.reduce(torch.maximum if fusion == "max" else torch.add, per_level)
        torch.testing.assert_close(out, expected, msg=f"training={training}, size={size}")
