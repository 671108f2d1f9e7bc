"""LR schedules: exact values with warm-up, multi-step, cosine; state round trip."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from framework.engine.lr_scheduler import WarmupSchedule, build_lr_scheduler
from framework.errors import ConfigError


def _sched(optimizer, *, max_iter: int, name: str = "WarmupMultiStepLR", **knobs):
    """The run's scheduler for an ``lr_scheduler`` config node ``{name, **knobs}``."""
    return build_lr_scheduler(optimizer, {"name": name, **knobs}, max_iter=max_iter)


def _optimizer(lr: float = 0.1, n_groups: int = 1) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(n_groups)]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def _lrs(opt, sched, n: int, group: int = 0) -> list[float]:
    """The lr each of iterations 0..n-1 uses (the LRScheduler hook steps after every step)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_multistep():
    opt = _optimizer(0.1)
    sched = _sched(opt, max_iter=40, steps=(20, 30), gamma=0.1, warmup_iters=10, warmup_factor=0.001)
    lrs = _lrs(opt, sched, 40)
    assert lrs[0] == pytest.approx(0.1 * 0.001)
    # halfway through warm-up: factor 0.001 + (1 - 0.001) * 5 / 10 = 0.5005
    assert lrs[5] == pytest.approx(0.1 * 0.5005)
    assert lrs[9] == pytest.approx(0.1 * 0.9001)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[19] == pytest.approx(0.1)
    assert lrs[20] == pytest.approx(0.01)
    assert lrs[25] == pytest.approx(0.01)
    assert lrs[30] == pytest.approx(0.001)
    assert lrs[35] == pytest.approx(0.001)


def test_constant_warmup():
    opt = _optimizer(1.0)
    sched = _sched(opt, max_iter=20, steps=(15,), warmup_iters=4, warmup_factor=0.25, warmup_method="constant")
    assert _lrs(opt, sched, 20) == pytest.approx([0.25] * 4 + [1.0] * 11 + [0.1] * 5)


def test_no_warmup_multistep():
    opt = _optimizer(1.0)
    sched = _sched(opt, max_iter=6, steps=(2, 4), gamma=0.5, warmup_iters=0)
    assert _lrs(opt, sched, 6) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_cosine():
    opt = _optimizer(1.0)
    sched = _sched(opt, name="WarmupCosineLR", max_iter=10, warmup_iters=0, end_lr_factor=0.1)
    lrs = _lrs(opt, sched, 10)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.55)  # 0.1 + 0.9 * (1 + cos(pi / 2)) / 2


def test_cosine_with_warmup_ends_on_the_curve():
    opt = _optimizer(1.0)
    sched = _sched(opt, name="WarmupCosineLR", max_iter=100, warmup_iters=10, warmup_factor=0.001)
    lrs = _lrs(opt, sched, 11)
    at_10 = 0.5 * (1 + math.cos(math.pi * 0.1))  # 0.97552826
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[5] == pytest.approx(0.001 + 0.5 * (at_10 - 0.001))
    assert lrs[10] == pytest.approx(at_10)


def test_relative_group_lrs_kept():
    opt = _optimizer(0.1, n_groups=2)  # group lrs 0.1 and 0.2
    sched = _sched(opt, max_iter=10, steps=(5,), warmup_iters=0)
    assert _lrs(opt, sched, 6, group=1) == pytest.approx([0.2] * 5 + [0.02])


def test_steps_beyond_max_iter_are_ignored(caplog):
    opt = _optimizer(1.0)
    with caplog.at_level(logging.WARNING):
        sched = _sched(opt, max_iter=4, steps=(2, 4, 10), warmup_iters=0)
    assert "[4, 10]" in caplog.text
    assert _lrs(opt, sched, 4) == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_bad_values():
    with pytest.raises(ConfigError, match="increasing"):
        _sched(_optimizer(), max_iter=10, steps=(5, 3))
    with pytest.raises(ConfigError, match="lr_scheduler.name'.. Did you mean 'WarmupCosineLR'"):
        _sched(_optimizer(), name="WarmupCosinLR", max_iter=10)
    with pytest.raises(ConfigError, match="warmup_method"):
        _sched(_optimizer(), max_iter=10, warmup_method="exp")


def test_state_dict_round_trip():
    opt = _optimizer(1.0)
    sched = _sched(opt, max_iter=10, steps=(5,), warmup_iters=2, warmup_factor=0.5)
    _lrs(opt, sched, 4)
    state, opt_state = sched.state_dict(), opt.state_dict()
    assert state == {"base_lrs": [1.0], "last_epoch": 4}

    opt2 = _optimizer(1.0)
    sched2 = _sched(opt2, max_iter=10, steps=(5,), warmup_iters=2, warmup_factor=0.5)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    resumed, uninterrupted = _lrs(opt2, sched2, 6), _lrs(opt, sched, 6)
    assert resumed == uninterrupted
    assert resumed == pytest.approx([1.0] + [0.1] * 5)


def test_stepping_past_max_iter_is_a_clear_error():
    opt = _optimizer(1.0)
    sched = _sched(opt, max_iter=3, warmup_iters=0)
    _lrs(opt, sched, 3)  # after the last step: iteration 3 == max_iter, still fine
    with pytest.raises(RuntimeError, match="max_iter=3"):
        sched.step()


def test_a_schedule_subclass_inherits_the_warmup_knobs():
    from fvcore.common.param_scheduler import ConstantParamScheduler

    from framework.registry import knobs

    class WarmupConstantHalf(WarmupSchedule):
        def __init__(self, max_iter: int, *, level: float = 0.5, **kwargs):
            super().__init__(max_iter, **kwargs)
            self.level = level

        def main_schedule(self):
            return ConstantParamScheduler(self.level)

    assert [k.name for k in knobs(WarmupConstantHalf)] == ["level", "warmup_iters", "warmup_factor", "warmup_method"]
    mult = WarmupConstantHalf(10, warmup_iters=2, warmup_factor=0.0)
    # linear from 0 to level over 2 of 10 iterations, then the level
    assert [mult(i / 10) for i in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.5])
