"""detector_postprocess by hand, and GeneralizedRCNN (pre-processing, training losses, inference outputs).

GeneralizedRCNN lives here because it is the caller of detector_postprocess and the last stage of the
heads' pipeline; the model is the tiny R18-FPN described in ``TINY_MASK_RCNN``.
"""

import pytest
import torch

import framework.modeling  # noqa: F401  (registers every built-in component)
from framework.modeling.postprocessing import detector_postprocess
from framework.registry import META_ARCHITECTURES
from framework.structures import Boxes, Instances, PolygonMasks


# ---------------------------------------------------------------------------- detector_postprocess
def _detections():
    """Three detections at the network's input size (h=50, w=60)."""
    masks = torch.zeros(3, 1, 28, 28)
    masks[0] = 1.0  # all ones: covers exactly its box after pasting
    masks[2] = 0.4  # below the 0.5 threshold everywhere
    return Instances(
        (50, 60),
        pred_boxes=Boxes(
            torch.tensor(
                [
                    [5.0, 5.0, 15.0, 20.0],  # x2 -> [10, 10, 30, 40]
                    [10.0, 10.0, 10.0, 30.0],  # zero width -> removed
                    [50.0, 40.0, 70.0, 60.0],  # x2 -> [100, 80, 140, 120] -> clipped to [100, 80, 120, 100]
                ]
            )
        ),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        pred_classes=torch.tensor([1, 2, 0]),
        pred_masks=masks,
    )


def test_boxes_scaled_clipped_and_empty_removed():
    out = detector_postprocess(_detections(), 100, 120)
    assert out.image_size == (100, 120)
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[10.0, 10, 30, 40], [100.0, 80, 120, 100]]))
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.7]))
    assert out.pred_classes.tolist() == [1, 0]


def test_anisotropic_scaling():
    # (50, 60) -> (25, 180): scale_y = 0.5, scale_x = 3
    r = Instances((50, 60), pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 20.0, 30.0]])), scores=torch.tensor([1.0]))
    out = detector_postprocess(r, 25, 180)
    torch.testing.assert_close(out.pred_boxes.tensor, torch.tensor([[30.0, 5.0, 60.0, 15.0]]))


def test_masks_pasted_to_full_size_bool():
    out = detector_postprocess(_detections(), 100, 120)
    assert out.pred_masks.shape == (2, 100, 120) and out.pred_masks.dtype == torch.bool
    # all-ones mask on box [10, 10, 30, 40]: pixels x in [10, 30), y in [10, 40) -> 20 * 30 = 600
    expected = torch.zeros(100, 120, dtype=torch.bool)
    expected[10:40, 10:30] = True
    assert torch.equal(out.pred_masks[0], expected)
    assert not out.pred_masks[1].any()  # 0.4 < 0.5


def test_mask_threshold_knob():
    out = detector_postprocess(_detections(), 100, 120, mask_threshold=0.3)
    # the 0.4 mask now passes inside its clipped box [100, 80, 120, 100]: 20 * 20 = 400 pixels
    assert out.pred_masks[1].sum().item() == 400 and out.pred_masks[1, 80:100, 100:120].all()


def test_no_detections():
    r = Instances(
        (50, 60), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0), pred_masks=torch.zeros(0, 1, 28, 28)
    )
    out = detector_postprocess(r, 100, 120)
    assert len(out) == 0 and out.pred_masks.shape == (0, 100, 120)


def test_proposals_are_postprocessed_too():
    # RPN-only outputs (proposal_boxes), as detectron2's detector_postprocess accepts
    r = Instances(
        (50, 60), proposal_boxes=Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]])), objectness_logits=torch.tensor([0.0])
    )
    out = detector_postprocess(r, 100, 120)
    torch.testing.assert_close(out.proposal_boxes.tensor, torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    with pytest.raises(ValueError, match="pred_boxes"):
        detector_postprocess(Instances((5, 5), scores=torch.zeros(1)), 10, 10)


# ---------------------------------------------------------------------------- GeneralizedRCNN
TINY_MASK_RCNN = {
    "name": "GeneralizedRCNN",
    "backbone": {
        "name": "FPN",
        "out_channels": 32,
        "bottom_up": {"name": "ResNet", "depth": 18, "res2_out_channels": 64},
    },
    "roi_heads": {
        "name": "StandardROIHeads",
        "num_classes": 3,
        "mask_head": {"name": "MaskRCNNConvUpsampleHead", "conv_dim": 16, "num_conv": 1},
        "box_head": {"name": "FastRCNNConvFCHead", "fc_dim": 64},
    },
}


@pytest.fixture(scope="module")
def model():
    # Tiny convolutions are dominated by thread synchronisation: on a busy 2-core machine one thread
    # runs this file ~10x faster than two. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield META_ARCHITECTURES.build(TINY_MASK_RCNN)
    torch.set_num_threads(threads)


def _gt(size):
    return Instances(
        size,
        gt_boxes=Boxes(torch.tensor([[4.0, 6.0, 30.0, 28.0], [20.0, 10.0, 48.0, 28.0]])),
        gt_classes=torch.tensor([0, 2]),
        gt_masks=PolygonMasks(
            [[[4.0, 6.0, 30.0, 6.0, 30.0, 28.0]], [[20.0, 10.0, 48.0, 10.0, 48.0, 28.0, 20.0, 28.0]]]
        ),
    )


def test_preprocess_normalises_and_pads_to_32(model):
    mean, std = model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()
    # channel c of image 0 holds mean_c + (c + 1) * std_c -> normalised to c + 1; image 1 holds mean -> 0
    img0 = torch.stack([torch.full((33, 40), mean[c] + (c + 1) * std[c]) for c in range(3)])
    img1 = torch.stack([torch.full((20, 65), mean[c]) for c in range(3)])
    images = model.preprocess_image([{"image": img0}, {"image": img1}])
    # padded to ceil(33 / 32) * 32 = 64 rows and ceil(65 / 32) * 32 = 96 columns, zeros after normalising
    assert images.tensor.shape == (2, 3, 64, 96)
    assert images.image_sizes == [(33, 40), (20, 65)]
    for c in range(3):
        torch.testing.assert_close(images.tensor[0, c, :33, :40], torch.full((33, 40), float(c + 1)))
    assert images.tensor[0, :, 33:].abs().sum() == 0 and images.tensor[0, :, :, 40:].abs().sum() == 0
    torch.testing.assert_close(images.tensor[1], torch.zeros(3, 64, 96))


def test_preprocess_uses_pixel_std():
    m = META_ARCHITECTURES.build({**TINY_MASK_RCNN, "pixel_mean": [10.0, 20.0, 30.0], "pixel_std": [2.0, 4.0, 5.0]})
    img = torch.stack([torch.full((32, 32), v) for v in (12.0, 24.0, 40.0)])
    # (12 - 10) / 2 = 1, (24 - 20) / 4 = 1, (40 - 30) / 5 = 2
    images = m.preprocess_image([{"image": img}])
    torch.testing.assert_close(images.tensor[0, :, 0, 0], torch.tensor([1.0, 1.0, 2.0]))
    assert images.tensor.shape == (1, 3, 32, 32)


def test_training_without_instances_is_a_clear_error(model):
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": torch.zeros(3, 32, 32)}])


def test_training_returns_five_finite_losses_with_backbone_gradients(model):
    torch.manual_seed(0)
    model.train()
    model.zero_grad()
    # small images (padded batch 32 x 64) keep this CPU test fast
    inputs = [
        {"image": torch.rand(3, 32, 64) * 255, "instances": _gt((32, 64))},
        {"image": torch.rand(3, 30, 50) * 255, "instances": _gt((30, 50))},
    ]
    losses = model(inputs)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    # every trainable part gets a non-zero gradient: bottom-up res3..res5 (stem and res2 are frozen, as
    # detectron2's freeze_at=2), the FPN convs, the RPN head and the three RoI-head modules
    prefixes = (
        "backbone.bottom_up.res3", "backbone.bottom_up.res4", "backbone.bottom_up.res5", "backbone.fpn_lateral",
        "backbone.fpn_output", "proposal_generator.rpn_head", "roi_heads.box_head", "roi_heads.box_predictor",
        "roi_heads.mask_head",
    )
    for prefix in prefixes:
        hit = [g for n, g in grads.items() if n.startswith(prefix)]
        assert hit and any(g is not None and float(g.abs().sum()) > 0 for g in hit), prefix
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone.bottom_up.stem"))


def test_inference_outputs_at_original_size(model):
    torch.manual_seed(1)
    model.eval()
    inputs = [
        {"image": torch.rand(3, 32, 48) * 255, "height": 64, "width": 96},  # 2x the network input
        {"image": torch.rand(3, 30, 40) * 255},  # no height/width: stays at the input size
    ]
    outputs = model(inputs)
    assert len(outputs) == 2 and all(set(o) == {"instances"} for o in outputs)
    for out, (h, w) in zip(outputs, [(64, 96), (30, 40)]):
        inst = out["instances"]
        assert inst.image_size == (h, w)
        assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(inst.get_fields())
        r = len(inst)
        assert 0 < r <= 100  # score threshold 0.05 over 3 classes: an untrained model still detects
        assert inst.pred_masks.shape == (r, h, w) and inst.pred_masks.dtype == torch.bool
        b = inst.pred_boxes.tensor
        assert float(b[:, 0::2].min()) >= 0 and float(b[:, 2].max()) <= w and float(b[:, 3].max()) <= h
        assert int(inst.pred_classes.max()) < 3 and not inst.scores.requires_grad


def test_inference_without_postprocess_keeps_network_size(model):
    torch.manual_seed(1)
    model.eval()
    (raw,) = model.inference([{"image": torch.rand(3, 32, 48) * 255, "height": 64, "width": 96}], do_postprocess=False)
    assert raw.image_size == (32, 48)
    assert raw.pred_masks.shape == (len(raw), 1, 28, 28)
