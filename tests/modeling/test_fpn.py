"""FPN: output shapes/strides, the top-down arithmetic on hand-made features, names, validation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from framework.errors import ConfigError
from framework.modeling.backbone import FPN, Backbone
from framework.registry import BACKBONES

R18 = {"name": "ResNet", "depth": 18, "res2_out_channels": 64}


@pytest.fixture(scope="module")
def fpn() -> FPN:
    return BACKBONES.build({"name": "FPN", "bottom_up": R18, "out_channels": 32})


def test_shapes_strides_channels(fpn):
    out = fpn(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p2": (1, 32, 16, 24),
        "p3": (1, 32, 8, 12),
        "p4": (1, 32, 4, 6),
        "p5": (1, 32, 2, 3),
        "p6": (1, 32, 1, 2),
    }
    assert {k: (s.channels, s.stride) for k, s in fpn.output_shape().items()} == {
        "p2": (32, 4),
        "p3": (32, 8),
        "p4": (32, 16),
        "p5": (32, 32),
        "p6": (32, 64),
    }
    # detectron2: the stride of the coarsest *input* feature (res5), not p6's.
    assert fpn.size_divisibility == 32
    assert fpn.padding_constraints == {"size_divisibility": 32}


def test_p6_is_p5_subsampled(fpn):
    out = fpn(torch.randn(1, 3, 64, 96))
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2], rtol=0, atol=0)


def test_names_and_fpn_parameter_count(fpn):
    keys = set(fpn.state_dict())
    for level in (2, 3, 4, 5):
        assert {f"fpn_lateral{level}.weight", f"fpn_lateral{level}.bias"} <= keys
        assert {f"fpn_output{level}.weight", f"fpn_output{level}.bias"} <= keys
    assert {"bottom_up.stem.conv1.weight", "bottom_up.res2.0.conv1.norm.weight"} <= keys
    assert not any(k.startswith(("lateral_convs", "output_convs", "top_block")) for k in keys)
    # laterals: (64 + 128 + 256 + 512) * 32 + 4 * 32 biases = 30848
    # outputs:  4 * (32 * 32 * 9 + 32) = 36992
    own = sum(p.numel() for n, p in fpn.named_parameters() if not n.startswith("bottom_up."))
    assert own == 30848 + 36992


def test_xavier_init(fpn):
    # c2_xavier_fill = kaiming_uniform(a=1): bound sqrt(3 / fan_in); fan_in(lateral2) = 64
    w = fpn.fpn_lateral2.weight
    assert w.abs().max().item() <= (3 / 64) ** 0.5
    assert w.abs().max().item() > 0.9 * (3 / 64) ** 0.5
    assert fpn.fpn_output3.bias.abs().sum().item() == 0


class _ConstantBackbone(Backbone):
    """Returns fixed 1-channel maps c3 (stride 8) and c4 (stride 16), whatever the input."""

    def __init__(self, c3: Tensor, c4: Tensor) -> None:
        super().__init__()
        self.c3, self.c4 = c3, c4
        self._out_features = ["c3", "c4"]
        self._out_feature_channels = {"c3": 1, "c4": 1}
        self._out_feature_strides = {"c3": 8, "c4": 16}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"c3": self.c3, "c4": self.c4}


def _identity_convs(fpn: FPN) -> None:
    with torch.no_grad():
        for level in (3, 4):
            getattr(fpn, f"fpn_lateral{level}").weight.fill_(1.0)
            out = getattr(fpn, f"fpn_output{level}")
            out.weight.zero_()
            out.weight[0, 0, 1, 1] = 1.0  # 3x3 kernel with only the centre: identity


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("fuse_type, scale", [("sum", 1.0), ("avg", 0.5)])
def test_top_down_arithmetic(fuse_type, scale, grad):
    c4 = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    c3 = torch.tensor([[[[10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 70.0, 80.0]]]])  # (1, 1, 2, 4)
    fpn = FPN(bottom_up=_ConstantBackbone(c3, c4), in_features=["c3", "c4"], out_channels=1, fuse_type=fuse_type)
    _identity_convs(fpn)
    with torch.set_grad_enabled(grad):
        out = fpn(torch.zeros(1, 3, 16, 32))
    assert list(out) == ["p3", "p4", "p5"]
    assert out["p4"].flatten().tolist() == [1.0, 2.0]
    # p3 = c3 + nearest_upsample_x2(c4) = c3 + [[1, 1, 2, 2], [1, 1, 2, 2]]  (halved for "avg")
    expected_p3 = [[11.0, 21.0, 32.0, 42.0], [51.0, 61.0, 72.0, 82.0]]
    assert out["p3"][0, 0].tolist() == [[v * scale for v in row] for row in expected_p3]
    # the top block extends the coarsest level: p5 = p4[::2, ::2]
    assert out["p5"].flatten().tolist() == [1.0]
    assert fpn.output_shape()["p5"].stride == 32


def test_no_top_block_and_norm():
    fpn = FPN(bottom_up=R18, in_features=("res3", "res4", "res5"), out_channels=32, norm="GN", top_block=None)
    out = fpn(torch.randn(1, 3, 64, 64))
    assert list(out) == ["p3", "p4", "p5"]
    assert fpn.fpn_lateral3.bias is None  # a norm follows: no conv bias, as detectron2
    assert isinstance(fpn.fpn_lateral3.norm, nn.GroupNorm)
    assert "fpn_output5.norm.weight" in fpn.state_dict()


def test_in_feature_not_produced_by_bottom_up():
    with pytest.raises(ConfigError, match=r"in_features has 'res6'.*Did you mean 'res5'.*\['res2', 'res3', 'res4', 'res5'\]"):
        FPN(bottom_up=R18, in_features=("res4", "res6"))
    with pytest.raises(ConfigError, match=r"'res2'.*Available: \['res3', 'res4', 'res5'\]"):
        FPN(bottom_up={**R18, "out_features": ["res3", "res4", "res5"]})


def test_in_features_must_double_in_stride():
    with pytest.raises(ConfigError, match=r"strides \[4, 16\]"):
        FPN(bottom_up=R18, in_features=("res2", "res4"))


def test_bad_knob_values_from_config():
    with pytest.raises(ConfigError, match="fuse_type"):
        BACKBONES.build({"name": "FPN", "bottom_up": R18, "fuse_type": "max"})
    with pytest.raises(ConfigError, match="top_block"):
        BACKBONES.build({"name": "FPN", "bottom_up": R18, "top_block": "LastLevelP6P7"})


def test_input_not_divisible_by_size_divisibility(fpn):
    with pytest.raises(ValueError, match="size_divisibility=32"):
        fpn(torch.zeros(1, 3, 64, 80))


def test_padding_constraints_follow_size_divisibility_for_any_backbone():
    from framework.modeling.backbone.backbone import Backbone

    class Plain(Backbone):
        def forward(self, x):
            return {}

    assert Plain().padding_constraints == {}  # size_divisibility 0: no constraint


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["NCHW", "NHWC"])
def test_add_upsampled_is_the_materialised_top_down_add(memory_format):
    from framework.modeling.backbone.fpn import add_upsampled_

    g = torch.Generator().manual_seed(0)
    fine = torch.randn(2, 8, 6, 10, generator=g).contiguous(memory_format=memory_format)
    coarse = torch.randn(2, 8, 3, 5, generator=g).contiguous(memory_format=memory_format)
    expected = fine + F.interpolate(coarse, scale_factor=2.0, mode="nearest")
    with torch.no_grad():  # the broadcast over a 2x2-block view
        out = add_upsampled_(fine.clone(), coarse)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=memory_format)

    # with gradients: in place into the fine map, the same values and gradients as out of place
    fine_leaf, coarse_leaf = fine.clone().requires_grad_(), coarse.clone().requires_grad_()
    out = add_upsampled_(fine_leaf * 1, coarse_leaf)
    assert torch.equal(out, expected)
    weights = torch.randn(expected.shape, generator=g)
    (out * weights).sum().backward()
    assert torch.equal(fine_leaf.grad, weights)
    # each coarse pixel's gradient is the sum over its 2x2 block
    assert torch.allclose(coarse_leaf.grad, weights.view(2, 8, 3, 2, 5, 2).sum(dim=(3, 5)), atol=1e-6)
