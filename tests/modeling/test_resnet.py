"""ResNet backbone: shapes, strides, freezing, names, parameter counts, and torchvision parity."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from framework.errors import ConfigError
from framework.layers import FrozenBatchNorm2d
from framework.modeling.backbone import ResNet
from framework.registry import BACKBONES

# torchvision resnet50: 25,557,032 parameters, of which the fc layer has 2048 * 1000 + 1000.
R50_PARAMS_WITHOUT_FC = 25_557_032 - 2_049_000  # 23,508,032
# Batch norm weight + bias in ResNet-50: 2 * (64 [stem] + sum over blocks of its norm channels).
R50_NORM_AFFINE_PARAMS = 53_120


@pytest.fixture(scope="module")
def r50() -> ResNet:
    return BACKBONES.build("ResNet")


def test_registered():
    assert BACKBONES.get("ResNet") is ResNet


def test_r50_output_shapes_strides_channels(r50):
    out = r50(torch.zeros(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 256, 16, 24),
        "res3": (1, 512, 8, 12),
        "res4": (1, 1024, 4, 6),
        "res5": (1, 2048, 2, 3),
    }
    shapes = r50.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res2": (256, 4),
        "res3": (512, 8),
        "res4": (1024, 16),
        "res5": (2048, 32),
    }
    assert r50.size_divisibility == 0


def test_r50_names_match_detectron2(r50):
    keys = set(r50.state_dict())
    for name in [
        "stem.conv1.weight",
        "stem.conv1.norm.running_mean",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.weight",
        "res2.0.conv2.norm.bias",
        "res2.0.conv3.norm.running_var",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.weight",
        "res3.3.conv3.weight",
        "res4.5.conv2.weight",
        "res5.2.conv3.norm.weight",
    ]:
        assert name in keys, name
    assert "res2.1.shortcut.weight" not in keys  # identity shortcut after the first block
    assert "res5.3.conv1.weight" not in keys  # res5 has 3 blocks
    assert not any(k.startswith(("fc", "linear")) for k in keys)
    # 1 stem conv + 16 blocks * 3 convs + 4 shortcuts, each with a norm
    assert sum(k.endswith("norm.running_mean") for k in keys) == 1 + 16 * 3 + 4


def test_r50_parameter_count_matches_torchvision_without_fc():
    tv = torchvision.models.resnet50(weights=None)
    tv_count = sum(p.numel() for p in tv.parameters()) - sum(p.numel() for p in tv.fc.parameters())
    assert tv_count == R50_PARAMS_WITHOUT_FC == 23_508_032
    ours = ResNet(norm="BN", freeze_at=0)
    assert sum(p.numel() for p in ours.parameters()) == R50_PARAMS_WITHOUT_FC


def test_r50_frozen_bn_affine_are_buffers(r50):
    # With FrozenBN the norm weight/bias are buffers: only conv weights are parameters.
    assert sum(p.numel() for p in r50.parameters()) == R50_PARAMS_WITHOUT_FC - R50_NORM_AFFINE_PARAMS
    assert all(isinstance(m, FrozenBatchNorm2d) for n, m in r50.named_modules() if n.endswith("norm"))


def test_freeze_at_2_default(r50):
    # freeze_at=2: stem and res2 frozen, res3+ trainable
    for name, p in r50.named_parameters():
        assert p.requires_grad == (not name.startswith(("stem.", "res2."))), name


@pytest.mark.parametrize("freeze_at, frozen_prefixes", [(0, ()), (1, ("stem.",)), (3, ("stem.", "res2.", "res3."))])
def test_freeze_at_converts_bn_and_stops_grad(freeze_at, frozen_prefixes):
    model = ResNet(depth=18, res2_out_channels=64, norm="BN", freeze_at=freeze_at)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    for name, m in model.named_modules():
        if name.endswith(".norm"):
            frozen = name.startswith(frozen_prefixes)
            assert isinstance(m, FrozenBatchNorm2d if frozen else nn.BatchNorm2d), name


def test_r18_shapes_and_blocks():
    model = ResNet(depth=18, res2_out_channels=64)
    out = model(torch.zeros(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 64, 16, 24),
        "res3": (2, 128, 8, 12),
        "res4": (2, 256, 4, 6),
        "res5": (2, 512, 2, 3),
    }
    keys = set(model.state_dict())
    assert "res2.0.shortcut.weight" not in keys  # 64 -> 64: identity
    assert "res3.0.shortcut.weight" in keys and "res3.0.conv3.weight" not in keys
    assert "res5.1.conv2.weight" in keys and "res5.2.conv1.weight" not in keys


def test_stride_in_1x1():
    default = ResNet(depth=50, out_features=("res3",))
    assert default.res3[0].conv1.stride == (2, 2) and default.res3[0].conv2.stride == (1, 1)
    tv_style = ResNet(depth=50, out_features=("res3",), stride_in_1x1=False)
    assert tv_style.res3[0].conv1.stride == (1, 1) and tv_style.res3[0].conv2.stride == (2, 2)


def test_only_stages_up_to_last_out_feature_are_built():
    model = ResNet(depth=18, res2_out_channels=64, out_features=("stem", "res3"))
    assert model.stage_names == ("res2", "res3")
    assert not hasattr(model, "res4")
    out = model(torch.zeros(1, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"stem": (1, 64, 8, 8), "res3": (1, 128, 4, 4)}
    assert {k: (s.channels, s.stride) for k, s in model.output_shape().items()} == {
        "stem": (64, 4),
        "res3": (128, 8),
    }


def test_res5_dilation_keeps_stride_16():
    model = ResNet(res5_dilation=2, out_features=("res5",), freeze_at=0)
    assert model.res5[0].conv2.dilation == (2, 2) and model.res5[0].conv2.padding == (2, 2)
    assert model.output_shape()["res5"].stride == 16
    assert tuple(model(torch.zeros(1, 3, 64, 96))["res5"].shape) == (1, 2048, 4, 6)


def test_resnext_groups():
    model = ResNet(num_groups=32, width_per_group=4, out_features=("res2",))
    conv2 = model.res2[0].conv2
    assert conv2.groups == 32 and conv2.in_channels == 128 and conv2.out_channels == 128


def test_msra_init():
    torch.manual_seed(0)
    model = ResNet(depth=18, res2_out_channels=64, out_features=("res2",))
    # kaiming normal, fan_out, relu: std = sqrt(2 / (64 * 7 * 7)) = 0.02526
    std = model.stem.conv1.weight.std().item()
    assert abs(std - math.sqrt(2 / (64 * 49))) < 0.05 * math.sqrt(2 / (64 * 49))
    assert model.stem.conv1.bias is None


@pytest.mark.parametrize("depth, tv_builder", [(18, torchvision.models.resnet18), (50, torchvision.models.resnet50)])
def test_matches_torchvision_with_copied_weights(depth, tv_builder):
    """Same architecture as torchvision (stride in the 3x3 conv): the same res5 features, within 1e-5
    of their largest value."""
    torch.manual_seed(0)
    tv = tv_builder(weights=None).eval()
    # Non-trivial norm statistics, so that a misplaced norm would show.
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    ours = ResNet(depth=depth, res2_out_channels=64 if depth < 50 else 256, stride_in_1x1=False, freeze_at=0)
    ours.load_state_dict(_torchvision_to_ours(tv.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        t = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
        res5 = ours(x)["res5"]
    # Ours folds each frozen norm into its convolution (one rounding instead of two), so compare
    # at the output's scale: a misplaced or missing norm would be off by a large fraction of it.
    scale = t.abs().max().item()
    torch.testing.assert_close(res5, t, rtol=0, atol=1e-5 * scale)


def _torchvision_to_ours(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        k = k.replace("conv1.", "stem.conv1.", 1) if k.startswith("conv1.") else k
        k = k.replace("bn1.", "stem.conv1.norm.", 1) if k.startswith("bn1.") else k
        for i in range(1, 5):
            k = k.replace(f"layer{i}.", f"res{i + 1}.", 1) if k.startswith(f"layer{i}.") else k
        k = k.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        for i in range(1, 4):
            k = k.replace(f".bn{i}.", f".conv{i}.norm.")
        out[k] = v
    return out


def test_narrow_r18_doubles_width_per_stage_with_projection_into_res2():
    # stem 32 -> res2 32 (no projection needed), res3 64, res4 128, res5 256
    model = ResNet(depth=18, stem_out_channels=32, res2_out_channels=32, norm="BN", freeze_at=0)
    shapes = model.output_shape()
    assert [shapes[f"res{i}"].channels for i in (2, 3, 4, 5)] == [32, 64, 128, 256]
    assert model.res2[0].shortcut is None
    # a res2 wider than the stem gets a 1x1 projection shortcut on its first block
    wide = ResNet(depth=18, stem_out_channels=32, res2_out_channels=64, norm="BN", freeze_at=0)
    assert wide.res2[0].shortcut.weight.shape == (64, 32, 1, 1)
    out = wide(torch.zeros(1, 3, 64, 64))
    assert out["res5"].shape == (1, 512, 2, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"out_features": ("res2", "res6")}, "unknown name 'res6'. Did you mean 'res5'"),
        ({"out_features": ("Res5",)}, "Did you mean 'res5'"),
        ({"out_features": ()}, "out_features is empty"),
        ({"freeze_at": 6}, "freeze_at=6 is out of range"),
        ({"depth": 34, "res2_out_channels": 64, "res5_dilation": 2}, "res5_dilation=1"),
    ],
)
def test_bad_knobs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ResNet(**kwargs)


def test_bad_depth_from_config():
    with pytest.raises(ConfigError, match="depth"):
        BACKBONES.build({"name": "ResNet", "depth": 42})


def test_non_4d_input(r50):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(3, 32, 32\)"):
        r50(torch.zeros(3, 32, 32))
