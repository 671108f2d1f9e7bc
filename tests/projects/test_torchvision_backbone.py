"""projects/torchvision_backbone: torchvision classifiers as FPN bottom-ups (TorchvisionBackbone)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from framework.config.compose import compose
from framework.errors import ConfigError
from framework.layers import FrozenBatchNorm2d
from framework.registry import BACKBONES, META_ARCHITECTURES
from framework.structures import ImageList
from projects.torchvision_backbone import TorchvisionBackbone
from projects.torchvision_backbone.stages import map_stride

#: 2 iterations on small images (tests/config/conftest.py SHORT_JOB), fewer proposals and detections
#: at evaluation (the untrained mask head on 100 detections per image is most of the time).
SHORT_JOB = ["train.max_iter=2", "lr_scheduler.steps=[]", "lr_scheduler.warmup_iters=1",
             "input.train.augmentations.0.short_edge_length=[128]", "input.test.augmentations.0.short_edge_length=[128]",
             "dataloader.train.num_workers=0",
             "dataloader.test.num_workers=0", "model.rpn.post_nms_topk_test=50",
             "model.roi_heads.box_predictor.test_detections_per_img=20"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads spinning against other jobs make
    these small forward passes ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The last block of each stride-4/8/16/32 stage and its output channels, as the torchvision model
# definitions (and the papers' stage tables) give them.
FAMILIES = {
    "resnet18": (["layer1", "layer2", "layer3", "layer4"], [64, 128, 256, 512]),
    "mobilenet_v3_small": (["features.1", "features.3", "features.8", "features.12"], [16, 24, 48, 576]),
    "regnet_x_400mf": ([f"trunk_output.block{i}" for i in range(1, 5)], [32, 64, 160, 400]),
    "convnext_tiny": (["features.1", "features.3", "features.5", "features.7"], [96, 192, 384, 768]),
    "efficientnet_b0": (["features.2", "features.3", "features.5", "features.8"], [24, 40, 112, 1280]),
}


@pytest.mark.parametrize("model_name", list(FAMILIES))
def test_stage_ends_strides_and_channels_of_each_family(model_name):
    nodes, channels = FAMILIES[model_name]
    with torch.device("meta"):  # shapes only: the constructor's dry runs work without weights
        backbone = TorchvisionBackbone(model_name=model_name)
    assert backbone.return_nodes == dict(zip(nodes, ["res2", "res3", "res4", "res5"]))
    shapes = backbone.output_shape()
    assert list(shapes) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    assert [s.channels for s in shapes.values()] == channels
    assert backbone.size_divisibility == 32


def test_map_stride_accepts_only_channels_first_maps():
    assert map_stride((1, 64, 24, 32), (96, 128)) == 4
    assert map_stride((1, 24, 32, 96), (96, 128)) is None  # channels-last (B, H/4, W/4, C)
    assert map_stride((1, 512, 1, 1), (96, 128)) is None  # after global pooling
    assert map_stride((1, 1000), (96, 128)) is None


def test_out_feature_names_choose_levels():
    with torch.device("meta"):
        backbone = TorchvisionBackbone(model_name="resnet18", out_features=["c3", "c4", "c5"], freeze_at=0)
    assert backbone.return_nodes == {"layer2": "c3", "layer3": "c4", "layer4": "c5"}
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {"c3": 8, "c4": 16, "c5": 32}
    with pytest.raises(ConfigError, match=r"no stage of stride \[64\].*strides found: \[2, 4, 8, 16, 32\]"):
        TorchvisionBackbone(model_name="resnet18", out_features=["res6"])
    with pytest.raises(ConfigError, match=r"out_features has 'layer_a'.*2\*\*level"):
        TorchvisionBackbone(model_name="resnet18", out_features=["layer_a"])


def _seeded(model_name: str, seed: int = 0) -> nn.Module:
    """A randomly initialised classifier whose BatchNorms have non-trivial statistics and affine
    parameters, so that losing them on the way into the backbone changes the features."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, model_name)(weights=None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def _resnet_stages(m, x):
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    out = {}
    for i in range(1, 5):
        x = getattr(m, f"layer{i}")(x)
        out[f"res{i + 1}"] = x
    return out


def _mobilenet_stages(m, x):
    out = {}
    for name, (start, stop) in zip(["res2", "res3", "res4", "res5"], [(0, 2), (2, 4), (4, 9), (9, 13)]):
        x = m.features[start:stop](x)
        out[name] = x
    return out


@pytest.mark.parametrize("model_name, stages", [("resnet18", _resnet_stages), ("mobilenet_v3_small", _mobilenet_stages)])
def test_weights_file_gives_the_classifiers_own_features(model_name, stages, tmp_path):
    tv = _seeded(model_name)
    path = tmp_path / f"{model_name}.pth"
    torch.save(tv.state_dict(), path)
    backbone = TorchvisionBackbone(model_name=model_name, weights_path=str(path)).eval()
    untrained = TorchvisionBackbone(model_name=model_name).eval()

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = stages(tv, x)
        ours = backbone(x)
        other = untrained(x)
    assert list(ours) == list(expected)
    for name in expected:
        assert ours[name].shape[-2:] == (64 // backbone.output_shape()[name].stride, 96 // backbone.output_shape()[name].stride)
        torch.testing.assert_close(ours[name], expected[name], rtol=0, atol=0, msg=name)  # the same ops
        assert not torch.allclose(other[name], expected[name], atol=1e-3)  # the file is what made them equal


def test_wrong_weights_file_is_named(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ConfigError, match=r"r18\.pth.*not a state dict of torchvision's 'resnet34'.*shape|r18\.pth.*resnet34.*missing"):
        TorchvisionBackbone(model_name="resnet34", weights_path=str(path))
    with pytest.raises(ConfigError, match="weights_path='.*nope.pth': file not found"):
        TorchvisionBackbone(model_name="resnet18", weights_path=str(tmp_path / "nope.pth"))


def _bn_types(backbone, prefix):
    return {type(m) for n, m in backbone.body.named_modules() if n.startswith(prefix) and "Norm" in type(m).__name__}


def test_freeze_at_and_norm_follow_the_stages():
    backbone = TorchvisionBackbone(model_name="resnet18", norm="BN", freeze_at=2)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert {n.split(".")[1] for n in frozen} == {"conv1", "layer1"}  # the stem and res2 (bn1 has no parameters left)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith(("body.layer2", "body.layer4")))
    assert _bn_types(backbone, "bn1") == _bn_types(backbone, "layer1") == {FrozenBatchNorm2d}
    assert _bn_types(backbone, "layer2") == {nn.BatchNorm2d}

    frozen_bn = TorchvisionBackbone(model_name="resnet18", norm="FrozenBN", freeze_at=0)
    assert all(p.requires_grad for p in frozen_bn.parameters())
    assert _bn_types(frozen_bn, "") == {FrozenBatchNorm2d}
    assert not any("bn" in n for n, _ in frozen_bn.named_parameters())  # statistics and affine are buffers

    # MobileNetV3: freezing up to stride 4 stops after features.3; the 1x1 expansion of features.4
    # still runs at stride 4 but belongs to the next stage and stays trainable.
    with torch.device("meta"):
        mobile = TorchvisionBackbone(model_name="mobilenet_v3_large", norm="BN", freeze_at=2)
    trainable = {n.split(".")[2] for n, p in mobile.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(4, 17)}
    with torch.device("meta"):
        sync = TorchvisionBackbone(model_name="resnet18", norm="SyncBN", freeze_at=2)
    assert _bn_types(sync, "layer1") == {FrozenBatchNorm2d} and _bn_types(sync, "layer2") == {nn.SyncBatchNorm}
    with pytest.raises(ConfigError, match=r"freeze_at=6 is out of range: 0 \(train all\) to 5"):
        TorchvisionBackbone(model_name="resnet18", freeze_at=6)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"model_name='resnet5' is not a torchvision classification model\. "
                                          r"Did you mean 'resnet50'.*Valid names: .*convnext_tiny.*resnet18"):
        TorchvisionBackbone(model_name="resnet5")
    with pytest.raises(ConfigError, match=r"Did you mean 'mobilenet_v3_small'"):
        BACKBONES.build({"name": "TorchvisionBackbone", "model_name": "mobilenet_v3_smal"})
    with pytest.raises(ConfigError, match="may not set 'weights'"):
        TorchvisionBackbone(model_name="resnet18", builder_kwargs={"weights": "DEFAULT"})
    with pytest.raises(ConfigError, match=r"builder_kwargs=\{'widht': 2\} for 'resnet18'"):
        TorchvisionBackbone(model_name="resnet18", builder_kwargs={"widht": 2})


def test_builder_kwargs_reach_the_builder():
    with torch.device("meta"):
        plain = TorchvisionBackbone(model_name="convnext_tiny")
        no_drop = TorchvisionBackbone(model_name="convnext_tiny", builder_kwargs={"stochastic_depth_prob": 0.0})
    depth_probs = [m.p for m in plain.body.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    assert depth_probs and max(depth_probs) > 0.0  # torchvision's default: up to 0.1 in the last block
    assert {m.p for m in no_drop.body.modules() if isinstance(m, torchvision.ops.StochasticDepth)} == {0.0}


def test_explicit_return_nodes():
    with torch.device("meta"):
        backbone = TorchvisionBackbone(model_name="resnet18", return_nodes={"layer2": "c3", "layer3.1.relu_1": "c4"},
                                       out_features=["c3", "c4"], freeze_at=0)
    assert {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()} == {"c3": (128, 8), "c4": (256, 16)}
    # from the command line: a {node: name} mapping (node names with dots too), or a list of nodes
    cfg = compose(["model/backbone/bottom_up=TorchvisionBackbone", "model.backbone.bottom_up.model_name=mobilenet_v3_large",
                   "model.backbone.bottom_up.return_nodes={features.6: c3, features.16: c5}",
                   "model.backbone.bottom_up.out_features=[c3,c5]"])
    with torch.device("meta"):
        mobile = BACKBONES.build(cfg.model.backbone.bottom_up)
        listed = TorchvisionBackbone(model_name="resnet18", return_nodes=["layer2", "layer4"],
                                     out_features=["layer4"], freeze_at=0)
    assert {k: (v.channels, v.stride) for k, v in mobile.output_shape().items()} == {"c3": (40, 8), "c5": (960, 32)}
    assert listed.return_nodes == {"layer4": "layer4"} and listed.output_shape()["layer4"].stride == 32
    with pytest.raises(ConfigError, match=r"return_nodes=3 must be a non-empty"):
        TorchvisionBackbone(model_name="resnet18", return_nodes=3)
    with pytest.raises(ConfigError, match=r"\['layer5'\] not nodes of torchvision's 'resnet18'\. Did you mean 'layer4'"):
        TorchvisionBackbone(model_name="resnet18", return_nodes={"layer5": "res5"}, out_features=["res5"])
    with pytest.raises(ConfigError, match=r"out_features has \['res2'\].*output names are \['c2'\]"):
        TorchvisionBackbone(model_name="resnet18", return_nodes={"layer1": "c2"}, out_features=["res2"])
    with pytest.raises(ConfigError, match=r"node 'avgpool'.*not a \(B, C, H / stride, W / stride\) feature map"):
        TorchvisionBackbone(model_name="resnet18", return_nodes={"avgpool": "pool"}, out_features=["pool"], freeze_at=0)


def test_fpn_over_it_on_a_padded_batch():
    """FPN over the adapter from a config node; odd-sized images padded to its size divisibility (32)."""
    fpn = BACKBONES.build({"name": "FPN", "out_channels": 8, "bottom_up": {
        "name": "TorchvisionBackbone", "model_name": "mobilenet_v3_small", "norm": "BN", "freeze_at": 0}}).eval()
    assert fpn.size_divisibility == 32
    images = ImageList.from_tensors([torch.randn(3, 70, 100), torch.randn(3, 50, 60)], size_divisibility=32)
    assert tuple(images.tensor.shape[-2:]) == (96, 128)
    with torch.no_grad():
        out = fpn(images.tensor)
    # 96x128 at strides 4..32, then P6 = P5 (3x4) subsampled by 2: ceil -> 2x2
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (24, 32), "p3": (12, 16), "p4": (6, 8), "p5": (3, 4), "p6": (2, 2)}
    assert all(v.shape[:2] == (2, 8) for v in out.values())


SHIPPED = [("FPN_tv_resnet50", "resnet50", "layer4"), ("FPN_tv_mobilenet_v3_large", "mobilenet_v3_large", "features.16"),
           ("FPN_tv_convnext_tiny", "convnext_tiny", "features.7"), ("FPN_tv_resnet18_quick", "resnet18", "layer4")]


@pytest.mark.parametrize("option, model_name, res5_node", SHIPPED)
def test_shipped_fpn_options_compose_and_build(option, model_name, res5_node):
    cfg = compose([f"model/backbone={option}"])
    assert cfg.model.backbone.bottom_up.name == "TorchvisionBackbone"
    assert cfg.model.backbone.bottom_up.model_name == model_name
    assert list(cfg.model.backbone.in_features) == ["res2", "res3", "res4", "res5"]
    with torch.device("meta"):
        model = META_ARCHITECTURES.build(cfg.model, path="model")
    assert model.backbone.bottom_up.return_nodes[res5_node] == "res5"
    assert list(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert model.backbone.size_divisibility == 32


def test_model_preset_sets_torchvision_input():
    on_r50 = compose(["model=mask_rcnn_R_50_FPN", "model/backbone=FPN_tv_resnet50"])
    assert on_r50.model.backbone.bottom_up.model_name == "resnet50" and on_r50.model.input_format == "BGR"
    cfg = compose(["model=mask_rcnn_tv_resnet50_FPN", "model.roi_heads.num_classes=3"])
    assert cfg.model.input_format == "RGB" and cfg.model.input_scale == 255.0
    assert list(cfg.model.pixel_mean) == [0.485, 0.456, 0.406] and list(cfg.model.pixel_std) == [0.229, 0.224, 0.225]
    assert cfg.input.train.image_format == "RGB"  # the mapper follows model.input_format
    assert cfg.model.backbone.bottom_up.model_name == "resnet50" and cfg.model.roi_heads.mask_head.name
    with torch.device("meta"):
        model = META_ARCHITECTURES.build(cfg.model, path="model")
    assert isinstance(model.backbone.bottom_up, TorchvisionBackbone)
    assert model.input_format == "RGB" and model.input_scale == 255.0  # (image / 255 - mean) / std


def test_bare_adapter_as_the_whole_backbone_is_refused_by_the_rpn():
    cfg = compose(["model/backbone=TorchvisionBackbone", "model.roi_heads.num_classes=3"])
    with torch.device("meta"), pytest.raises(ConfigError, match="is not an available feature"):
        META_ARCHITECTURES.build(cfg.model, path="model")


def test_default_job_trains_and_evaluates_with_a_pretrained_mobilenet(tmp_path, monkeypatch):
    """The real engine, 2 iterations + COCO evaluation, FPN over mobilenet_v3_small loaded from a
    weights file with stem + res2 frozen: the frozen weights come out of training as they went in,
    the others moved, and every feature map the engine asked for had the advertised shape."""
    from framework.engine.run import run

    tv = _seeded("mobilenet_v3_small", seed=1)
    weights = tmp_path / "mobilenet_v3_small.pth"
    torch.save(tv.state_dict(), weights)

    seen: list[tuple[bool, tuple, dict]] = []
    forward = TorchvisionBackbone.forward

    def recording_forward(self, x):
        out = forward(self, x)
        seen.append((self.training, tuple(x.shape), {k: tuple(v.shape) for k, v in out.items()}))
        return out

    monkeypatch.setattr(TorchvisionBackbone, "forward", recording_forward)
    bottom_up = "model.backbone.bottom_up"
    cfg = compose(SHORT_JOB + ["model/backbone/bottom_up=TorchvisionBackbone", f"{bottom_up}.model_name=mobilenet_v3_small",
                               f"{bottom_up}.weights_path={weights}", f"{bottom_up}.norm=BN", f"{bottom_up}.freeze_at=2"])
    run(cfg, output_dir=tmp_path / "run")

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["iteration"] == 2
    for key in ("bbox/AP", "segm/AP"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])
    assert "name: TorchvisionBackbone" in (tmp_path / "run" / "config.yaml").read_text()

    assert {training for training, _, _ in seen} == {True, False}
    for _, (b, c, h, w), out in seen:
        assert h % 32 == 0 and w % 32 == 0
        assert out == {name: (b, ch, h // s, w // s) for name, ch, s in
                       zip(["res2", "res3", "res4", "res5"], [16, 24, 48, 576], [4, 8, 16, 32])}

    state = torch.load(tmp_path / "run" / "model_final.pth", map_location="cpu", weights_only=False)
    state = state.get("model", state)
    start = tv.state_dict()
    prefix = "backbone.bottom_up.body."
    # stride 4 ends after features.1 in mobilenet_v3_small: features.0 (stem) and features.1 are
    # frozen; features.2's 1x1 expansion still runs at stride 4 but is the next stage's, trained.
    for name in ("features.0.0.weight", "features.1.block.0.0.weight", "features.1.block.1.fc1.weight",
                 "features.1.block.2.0.weight"):
        assert torch.equal(state[prefix + name], start[name]), f"{name} is frozen, yet it changed"
    for name in ("features.0.1.running_mean", "features.1.block.0.1.weight"):  # FrozenBatchNorm2d buffers
        assert torch.equal(state[prefix + name], start[name]), name
    for name in ("features.2.block.0.0.weight", "features.12.0.weight"):
        assert not torch.equal(state[prefix + name], start[name]), f"{name} is trainable, yet it did not move"
    # trained BatchNorm: its statistics were updated in training mode
    assert not torch.equal(state[prefix + "features.2.block.0.1.running_mean"], start["features.2.block.0.1.running_mean"])
