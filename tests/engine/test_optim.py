"""Optimizer param groups: weight decay / lr per parameter kind, dedup of shared parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from framework.engine.optim import SGD, AdamW, build_optimizer, is_norm_module
from framework.errors import ConfigError


class MyNorm(nn.Module):
    """A norm not derived from torch's classes: recognised by its name."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.weight


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)
        self.gn = nn.GroupNorm(1, 2)
        self.ln = nn.LayerNorm(2)
        self.my = MyNorm()
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)
        self.tied = nn.Linear(2, 2, bias=False)
        self.tied.weight = self.fc.weight  # shared: must appear once


def _groups_by_name(opt, model):
    names = {id(p): n for n, p in model.named_parameters()}  # a shared parameter: its first name
    out = {}
    for g in opt.param_groups:
        key = (g["lr"], g["weight_decay"])
        out[key] = sorted(names[id(p)] for p in g["params"])
    return out


def test_no_decay_on_norm_and_bias():
    model = Net()
    opt = SGD(model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=0.0)
    assert isinstance(opt, torch.optim.SGD)
    assert _groups_by_name(opt, model) == {
        (0.1, 1e-4): ["fc.weight"],
        (0.1, 0.0): sorted(["fc.bias", "bn.weight", "bn.bias", "gn.weight", "gn.bias", "ln.weight", "ln.bias", "my.weight"]),
    }
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == 9  # frozen.* excluded, tied.weight is fc.weight


def test_bias_decay_defaults_to_layer_decay():
    model = Net()
    opt = SGD(model, base_lr=0.1, weight_decay=1e-4, weight_decay_norm=0.5)
    groups = _groups_by_name(opt, model)
    # weight_decay_bias=None: fc.bias keeps weight_decay, norm biases keep weight_decay_norm
    assert groups[(0.1, 1e-4)] == ["fc.bias", "fc.weight"]
    assert groups[(0.1, 0.5)] == sorted(["bn.weight", "bn.bias", "gn.weight", "gn.bias", "ln.weight", "ln.bias", "my.weight"])


def test_bias_lr_factor():
    model = nn.Sequential(nn.Linear(2, 2))
    opt = SGD(model, base_lr=0.1, weight_decay=0.0, bias_lr_factor=2.0)
    assert _groups_by_name(opt, model) == {(0.1, 0.0): ["0.weight"], (0.2, 0.0): ["0.bias"]}


def test_sgd_step_applies_group_decay():
    # zero loss gradient: the step is pure weight decay, w <- w - lr * wd * w
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    opt = SGD(model, base_lr=0.5, momentum=0.0, weight_decay=0.1, weight_decay_bias=0.0)
    (model(torch.zeros(1, 1)) * 0).sum().backward()
    opt.step()
    assert model.weight.item() == pytest.approx(0.95)  # 1 - 0.5 * 0.1 * 1
    assert model.bias.item() == 1.0


def test_adamw_options():
    model = nn.Linear(2, 1)
    opt = AdamW(model, base_lr=1e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-6
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.05]


def test_sgd_options():
    opt = SGD(nn.Linear(2, 1), base_lr=0.02, momentum=0.8, nesterov=True)
    assert opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"] is True


@pytest.mark.parametrize("build", [SGD, AdamW])
def test_fused_is_the_default_and_matches_the_loop(build):
    # fused (the default) and torch's loop: the same updates to float rounding over several steps,
    # and each resumes from the other's state dict
    torch.manual_seed(0)
    # no norm after the conv: its bias would get a gradient of pure rounding, which Adam scales up to lr
    models = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [build(models[0], base_lr=0.01), build(models[1], base_lr=0.01, fused=False)]
    assert opts[0].defaults["fused"] is True and not opts[1].defaults["fused"]
    x = torch.randn(4, 3, 5, 5)
    for _ in range(3):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, torch.zeros_like(a))
    opts[1].load_state_dict(opts[0].state_dict())
    opts[0].load_state_dict(opts[1].state_dict())


def test_errors():
    with pytest.raises(ConfigError, match="OPTIMIZERS has no component named 'sgd' .at config path 'solver.name'.. Did you mean 'SGD'"):
        build_optimizer(nn.Linear(2, 1), {"name": "sgd", "base_lr": 0.1})
    with pytest.raises(ConfigError, match="'solver.momentm': SGD .OPTIMIZERS. has no knob 'momentm'. Did you mean 'momentum'"):
        build_optimizer(nn.Linear(2, 1), {"name": "SGD", "momentm": 0.1})
    with pytest.raises(ConfigError, match="solver.base_lr': must be > 0"):
        build_optimizer(nn.Linear(2, 1), {"name": "AdamW", "base_lr": 0.0})
    frozen = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        SGD(frozen, base_lr=0.1)


def test_build_from_config_node_equals_direct_call():
    model = Net()
    a = build_optimizer(model, {"name": "SGD", "base_lr": 0.1, "weight_decay_bias": 0.0})
    b = SGD(model, base_lr=0.1, weight_decay_bias=0.0)
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in a.param_groups] == [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in b.param_groups
    ]


def test_is_norm_module():
    assert is_norm_module(nn.SyncBatchNorm(2)) and is_norm_module(nn.InstanceNorm2d(2)) and is_norm_module(MyNorm())
    assert not is_norm_module(nn.Linear(2, 2)) and not is_norm_module(nn.Conv2d(1, 1, 1))
