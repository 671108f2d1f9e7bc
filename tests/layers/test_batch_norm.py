"""FrozenBatchNorm2d, convert_frozen_batchnorm, get_norm and the Conv2d wrapper."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from framework.errors import ConfigError
from framework.layers import Conv2d, FrozenBatchNorm2d, convert_frozen_batchnorm, get_norm
from framework.layers.batch_norm import fold_into_conv


def _frozen(weight, bias, mean, var, eps=1e-5) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(len(weight), eps=eps)
    bn.weight.copy_(torch.tensor(weight))
    bn.bias.copy_(torch.tensor(bias))
    bn.running_mean.copy_(torch.tensor(mean))
    bn.running_var.copy_(torch.tensor(var))
    return bn


def test_frozen_bn_hand_computed():
    # (x - mean) / sqrt(var) * weight + bias, with eps=0:
    # channel 0: (3 - 1) / 2 * 2 + 1 = 3 ; channel 1: (1 - 2) / 0.5 * 0.5 - 1 = -2
    bn = _frozen([2.0, 0.5], [1.0, -1.0], [1.0, 2.0], [4.0, 0.25], eps=0.0)
    x = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1)
    assert bn(x).flatten().tolist() == [3.0, -2.0]


def test_frozen_bn_matches_batchnorm2d_in_eval_mode():
    weight, bias, mean, var = [2.0, 0.5, -1.0], [1.0, -1.0, 0.0], [1.0, 2.0, -3.0], [4.0, 0.25, 9.0]
    ref = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(weight))
        ref.bias.copy_(torch.tensor(bias))
    ref.running_mean.copy_(torch.tensor(mean))
    ref.running_var.copy_(torch.tensor(var))
    frozen = _frozen(weight, bias, mean, var)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(frozen(x), ref(x))
    # the requires_grad path (torch.batch_norm) gives the same values, and d out / d x = w / sqrt(v + eps)
    xg = x.clone().requires_grad_(True)
    out = frozen(xg)
    torch.testing.assert_close(out, ref(x))
    out.sum().backward()
    expected = torch.tensor(weight) / torch.sqrt(torch.tensor(var) + 1e-5)
    torch.testing.assert_close(xg.grad, expected.view(1, 3, 1, 1).expand_as(x))


def test_frozen_bn_is_identity_at_init_and_has_no_parameters():
    bn = FrozenBatchNorm2d(4)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(bn(x), x)
    assert list(bn.parameters()) == []
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]


def test_frozen_bn_does_not_update_in_training_mode():
    bn = _frozen([1.0], [0.0], [5.0], [1.0]).train()
    bn(torch.randn(8, 1, 4, 4))
    assert bn.running_mean.tolist() == [5.0]


def test_frozen_bn_loads_old_checkpoint_with_only_weight_and_bias():
    bn = _frozen([1.0, 1.0], [0.0, 0.0], [7.0, 7.0], [3.0, 3.0])
    # No _metadata -> version None: a Caffe2-converted checkpoint with the folded affine only.
    bn.load_state_dict(OrderedDict(weight=torch.tensor([2.0, 3.0]), bias=torch.tensor([1.0, 1.0])))
    assert bn.running_mean.tolist() == [0.0, 0.0]
    assert bn.running_var.tolist() == [1.0, 1.0]


def test_convert_frozen_batchnorm_nested_and_top_level():
    bn = nn.BatchNorm2d(2, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -0.5]))
    bn.running_mean.copy_(torch.tensor([1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0, 16.0]))
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sequential(bn))
    x = torch.randn(1, 2, 3, 3)
    expected = model.eval()(x)

    same = convert_frozen_batchnorm(model)
    assert same is model  # containers are converted in place
    frozen = model[1][0]
    assert isinstance(frozen, FrozenBatchNorm2d)
    assert frozen.eps == 1e-3
    assert frozen.weight.tolist() == [2.0, 3.0] and frozen.running_var.tolist() == [4.0, 16.0]
    torch.testing.assert_close(model(x), expected)

    top = nn.BatchNorm2d(3)
    new = FrozenBatchNorm2d.convert_frozen_batchnorm(top)
    assert isinstance(new, FrozenBatchNorm2d) and new is not top and new.num_features == 3


def test_get_norm_names():
    assert get_norm("", 8) is None
    assert get_norm(None, 8) is None
    bn = get_norm("BN", 8)
    assert type(bn) is nn.BatchNorm2d and bn.num_features == 8
    assert isinstance(get_norm("FrozenBN", 8), FrozenBatchNorm2d)
    assert isinstance(get_norm("SyncBN", 8), nn.SyncBatchNorm)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 64
    custom = get_norm(lambda c: nn.GroupNorm(4, c), 8)
    assert custom.num_groups == 4


@pytest.mark.parametrize("bad, suggestion", [("bn", "'BN'"), ("FrozenBn", "'FrozenBN'"), ("SynBN", "'SyncBN'")])
def test_get_norm_unknown_name_suggests(bad, suggestion):
    with pytest.raises(ConfigError, match=f"unknown norm '{bad}'.*Did you mean.*{suggestion}"):
        get_norm(bad, 8)


def test_conv2d_applies_norm_then_activation():
    # 1x1 conv: 2 * x + 1 ; norm: * 3 ; relu.  x = -1 -> -1 -> -3 -> 0 ;  x = 1 -> 3 -> 9 -> 9
    norm = _frozen([3.0], [0.0], [0.0], [1.0], eps=0.0)
    conv = Conv2d(1, 1, kernel_size=1, norm=norm, activation=F.relu)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2)
    assert conv(x).flatten().tolist() == [0.0, 9.0]
    assert "norm.weight" in conv.state_dict()
    plain = Conv2d(1, 1, kernel_size=1)
    assert plain.norm is None and plain.activation is None


def _random_norm(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    return norm


@pytest.mark.parametrize("make_norm", [lambda c: FrozenBatchNorm2d(c, eps=1e-3), lambda c: nn.BatchNorm2d(c).eval()])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_fixed_norms_fold_into_the_convolution(make_norm, conv_bias):
    torch.manual_seed(0)
    conv = Conv2d(5, 6, 3, padding=1, bias=conv_bias, norm=_random_norm(make_norm(6)))
    x = torch.randn(2, 5, 9, 9, requires_grad=True)
    folded = conv(x)
    reference = conv.norm(F.conv2d(x, conv.weight, conv.bias, padding=1))
    torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-5)
    # Gradients reach the convolution's own parameters (and the input) as without folding.
    g = torch.randn_like(folded)
    ours = torch.autograd.grad(folded, [x, conv.weight], g)
    theirs = torch.autograd.grad(reference, [x, conv.weight], g)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert set(conv.state_dict()) >= {"weight", "norm.running_mean", "norm.running_var"}


@pytest.mark.parametrize("make_norm", [lambda c: FrozenBatchNorm2d(c, eps=1e-3), lambda c: nn.BatchNorm2d(c).eval()])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_values_are_torchs_conv_bn_fuser_bit_for_bit(make_norm, conv_bias):
    # fold_into_conv's docstring (and docs/benchmarks.md) promise fuse_conv_bn_weights' values exactly.
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    torch.manual_seed(1)
    norm = _random_norm(make_norm(6))
    weight = torch.randn(6, 5, 3, 3)
    bias = torch.randn(6) if conv_bias else None
    folded_w, folded_b = fold_into_conv(norm, weight, bias)
    fused_w, fused_b = fuse_conv_bn_weights(weight, bias, norm.running_mean, norm.running_var, norm.eps,
                                            norm.weight, norm.bias)
    assert torch.equal(folded_w, fused_w) and torch.equal(folded_b, fused_b)


def test_folded_weight_keeps_the_memory_format():
    norm = _random_norm(FrozenBatchNorm2d(4))
    weight = torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    w, b = fold_into_conv(norm, weight, None)
    assert w.is_contiguous(memory_format=torch.channels_last) and b.shape == (4,)


@pytest.mark.parametrize("norm", [None, nn.BatchNorm2d(4).train(), nn.GroupNorm(2, 4), nn.SyncBatchNorm(4).eval(),
                                  nn.BatchNorm2d(4, track_running_stats=False).eval()])
def test_norms_that_are_not_a_fixed_affine_map_do_not_fold(norm):
    assert fold_into_conv(norm, torch.randn(4, 3, 1, 1), None) is None


def test_batchnorm_in_training_mode_still_updates_its_statistics():
    conv = Conv2d(3, 4, 1, norm=nn.BatchNorm2d(4))
    conv(torch.randn(2, 3, 5, 5) + 3)
    assert int(conv.norm.num_batches_tracked) == 1 and conv.norm.running_mean.abs().sum() > 0


def test_a_norm_with_hooks_runs_as_its_own_module():
    conv = Conv2d(3, 4, 1, norm=_random_norm(FrozenBatchNorm2d(4)))
    seen = []
    handle = conv.norm.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    x = torch.randn(1, 3, 5, 5)
    with_hook = conv(x)
    handle.remove()
    assert seen == [(1, 4, 5, 5)]
    torch.testing.assert_close(with_hook, conv(x), rtol=1e-5, atol=1e-5)
