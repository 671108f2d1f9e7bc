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


@pytest.mark.parametrize(
    "preset, masks",
    [
        ("mask_rcnn_R_50_FPN", True),
        ("faster_rcnn_R_50_FPN", False),
        ("mask_rcnn_R_50_FPN_torchvision", True),
        ("faster_rcnn_R_50_FPN_torchvision", False),
    ],
)
def test_r50_fpn_presets_train_step_and_inference(preset, masks):
    torch.manual_seed(0)
    # Without pretrained weights a FrozenBN ResNet's activations explode and saturate the softmax;
    # GroupNorm keeps a randomly initialised model's scores informative enough to give detections.
    cfg = compose([f"model={preset}", "model.roi_heads.num_classes=3", "model.roi_heads.box_predictor.test_score_thresh=0.0",
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
                   "model.roi_heads.box_predictor.test_score_thresh=0.0"])
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


def test_test_resize_runs_inside_the_model_and_maps_outputs_back():
    torch.manual_seed(0)
    cfg = compose(["model=mask_rcnn_R_50_FPN_torchvision", "model.roi_heads.num_classes=3", "model.test_resize=[64,100]",
                   "model.roi_heads.box_predictor.test_score_thresh=0.0", "model.backbone.bottom_up.norm=GN"])
    model = META_ARCHITECTURES.build(cfg.model, path="model").eval()
    x = {"image": (torch.rand(3, 96, 128) * 255).to(torch.uint8)}  # no height/width: outputs at the given size
    images = model.preprocess_image([x])
    assert images.image_sizes == [(64, 85)]  # min(64/96, 100/128) = 2/3 -> floor(96 * 2/3), floor(128 * 2/3)
    expected = (x["image"].float() / 255 - model.pixel_mean) / model.pixel_std  # torchvision: normalise, then resize
    resized = torch.nn.functional.interpolate(expected[None], scale_factor=2 / 3, mode="bilinear",
                                              recompute_scale_factor=True, align_corners=False)[0]
    torch.testing.assert_close(images.tensor[0, :, :64, :85], resized, rtol=0, atol=0)
    with torch.no_grad():
        (out,) = model([x])
    assert out["instances"].image_size == (96, 128) and out["instances"].pred_masks.shape[1:] == (96, 128)
    model.train()  # training inputs come resized by the mapper: no resize in the model
    assert model.preprocess_image([x]).image_sizes == [(96, 128)]


def test_bf16_inference_amp_gives_float32_detections_close_to_fp32():
    torch.manual_seed(0)
    cfg = compose(["model=mask_rcnn_R_18_FPN_quick", "model.roi_heads.num_classes=3",
                   "model.roi_heads.box_predictor.test_score_thresh=0.0", "model.roi_heads.box_predictor.test_detections_per_img=20"])
    model = META_ARCHITECTURES.build(cfg.model, path="model").eval()
    x = _inputs(128, 160, train=False)
    with torch.no_grad():
        (fp32,) = model([x])
        model.inference_amp = "bf16"
        (bf16,) = model([x])
    a, b = fp32["instances"], bf16["instances"]
    assert len(b) == len(a) == 20
    assert b.scores.dtype == b.pred_boxes.tensor.dtype == torch.float32 and b.pred_masks.dtype == torch.bool
    # bf16 keeps 8 bits of mantissa: the top detection is found again, its box within a few pixels.
    top = a.pred_boxes.tensor[0]
    assert (b.pred_boxes.tensor - top).abs().amax(dim=1).min() < 4.0


def test_inference_amp_choices_and_fp16_on_cpu_are_clear_errors():
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="inference_amp"):
        META_ARCHITECTURES.build(compose(["model=mask_rcnn_R_18_FPN_quick", "model.inference_amp=fp8"]).model, path="model")
    model = META_ARCHITECTURES.build(compose(["model=mask_rcnn_R_18_FPN_quick", "model.inference_amp=fp16"]).model,
                                     path="model").eval()
    with pytest.raises(ConfigError, match="CUDA"):
        model([_inputs(64, 64, train=False)])


def test_torch_compile_names_submodules_and_keeps_the_state_dict():
    from framework.errors import ConfigError

    cfg = compose(["model=mask_rcnn_R_18_FPN_quick", "model.torch_compile=[roi_heads.box_head]"])
    torch.manual_seed(0)
    plain = META_ARCHITECTURES.build(compose(["model=mask_rcnn_R_18_FPN_quick"]).model, path="model")
    torch.manual_seed(0)
    compiled = META_ARCHITECTURES.build(cfg.model, path="model")
    assert compiled.roi_heads.box_head._compiled_call_impl is not None
    assert plain.roi_heads.box_head._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())
    with pytest.raises(ConfigError, match="no submodule 'roi_head'.*'roi_heads'"):
        META_ARCHITECTURES.build(compose(["model=mask_rcnn_R_18_FPN_quick", "model.torch_compile=[roi_head]"]).model,
                                 path="model")


def test_channels_last_training_gives_the_nchw_losses_and_gradients(monkeypatch):
    """``channels_last=always`` trains in NHWC: the same losses (rtol 1e-4) and gradients (within 1e-4
    of each one's largest value) as ``never``; ``auto`` picks NHWC for training only where
    channels_last_trains_faster."""
    from framework.layers.memory_format import is_channels_last

    torch.manual_seed(0)
    # FrozenBN: batch statistics over two small images make fp32 gradients ill-conditioned (a few %
    # from a float64 reference in either memory format), which would hide a real difference.
    cfg = compose(["model=mask_rcnn_R_18_FPN_quick", "model.roi_heads.num_classes=3", "model.backbone.bottom_up.norm=FrozenBN"])
    model = META_ARCHITECTURES.build(cfg.model, path="model").train()
    inputs = [_inputs(128, 160, True), _inputs(112, 144, True)]
    seen, proposals = [], {}
    model.backbone.register_forward_pre_hook(lambda m, a: seen.append(is_channels_last(a[0])))
    # An untrained RPN's scores are near-ties, so float rounding reorders its top-k; the RoI heads
    # get the first run's proposals to compare the same work.
    model.proposal_generator.register_forward_hook(
        lambda m, a, out: (proposals.setdefault("first", out[0]), out[1]) if m.training else out
    )

    def step(mode):
        model.channels_last = mode
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same RPN anchor and RoI samples on both sides
        losses = model(inputs)
        sum(losses.values()).backward()
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    nchw_losses, nchw_grads = step("never")
    nhwc_losses, nhwc_grads = step("always")
    assert seen == [False, True]
    assert set(nhwc_losses) == set(nchw_losses) and set(nhwc_grads) == set(nchw_grads) and len(nchw_grads) > 20
    for k in nchw_losses:
        torch.testing.assert_close(nhwc_losses[k], nchw_losses[k], rtol=1e-4, atol=1e-5, msg=k)
    for n in nchw_grads:
        scale = nchw_grads[n].abs().max().clamp(min=1e-6)
        torch.testing.assert_close(nhwc_grads[n] / scale, nchw_grads[n] / scale, rtol=0, atol=1e-4, msg=n)

    seen.clear()
    from framework.layers import memory_format
    from framework.utils.cpu_features import CpuFeatures

    for avx512 in (True, False):
        monkeypatch.setattr(memory_format, "cpu_features", lambda v=avx512: CpuFeatures({"AVX2": True, "AVX-512": v}))
        step("auto")
        model.eval()
        with torch.no_grad():
            model([_inputs(96, 128, False)])
        model.train()
    assert seen == [True, True, False, True]  # AVX-512: trains NHWC; AVX2: trains NCHW; inference NHWC
