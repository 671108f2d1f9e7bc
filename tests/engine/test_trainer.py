"""Trainer: one step, losses, non-finite stop, AMP, gradient clipping, state and exact resume."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from framework.checkpoint import Checkpointer
from framework.engine import (
    Hook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    Trainer,
    build_lr_scheduler,
    build_optimizer,
)
from framework.checkpoint.errors import CheckpointReadError
from framework.engine.resume import resume_or_load
from framework.errors import ConfigError


class Regressor(nn.Module):
    """Linear regression with a BatchNorm (so buffers are part of the state) and two losses."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        pred = self.linear(self.norm(x))
        return {"loss_mse": (pred - y).pow(2).mean(), "loss_l1": (pred - y).abs().mean()}


def random_batches():
    """Infinite batches drawn from the global torch RNG (which the trainer reseeds before each step)."""
    while True:
        x = torch.randn(4, 3)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(4, 1)
        yield [{"x": x[i], "y": y[i]} for i in range(4)]


class Crash(Hook):
    def __init__(self, at: int) -> None:
        self.at = at

    def before_step(self, loop):
        if loop.iter == self.at:
            raise KeyboardInterruptLike(f"simulated crash at {self.at}")


class KeyboardInterruptLike(RuntimeError):
    pass


class IterLog(Hook):
    def __init__(self) -> None:
        self.iters: list[int] = []

    def before_step(self, loop):
        self.iters.append(loop.iter)


def make_run(out_dir, *, seed: int, hooks=(), max_iter: int = 10, resume: bool = False, weights=None):
    """A run built as the main job builds one: where it starts is decided (resume_or_load) before
    the trainer, which is built complete and then given the saved trainer state."""
    torch.manual_seed(seed)
    model = Regressor()
    opt = build_optimizer(model, {"name": "SGD", "base_lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3})
    sched = build_lr_scheduler(
        opt, {"name": "WarmupMultiStepLR", "steps": (4, 8), "warmup_iters": 2, "warmup_factor": 0.1}, max_iter=max_iter
    )
    ckpt = Checkpointer(model, str(out_dir), optimizer=opt, scheduler=sched)
    start = resume_or_load(ckpt, weights, resume=resume)
    hooks = [IterationTimer(), LRScheduler(opt, sched), PeriodicCheckpointer(ckpt, period=3, max_to_keep=None), *hooks]
    trainer = Trainer(model=model, data_loader=random_batches(), optimizer=opt, checkpointer=ckpt,
                      max_iter=max_iter, hooks=hooks, seed=seed)
    if start.trainer_state is not None:
        trainer.load_state_dict(start.trainer_state)
    return trainer, sched, start


def test_resume_matches_uninterrupted_run(tmp_path):
    full, full_sched, start = make_run(tmp_path / "full", seed=0, resume=True)  # nothing to resume: starts at 0
    assert start.iteration == 0 and full.start_iter == 0
    full.train()

    crashed, _, _ = make_run(tmp_path / "resumed", seed=0, hooks=[Crash(at=7)])
    with pytest.raises(KeyboardInterruptLike):
        crashed.train()
    # checkpoints after iterations 2 and 5; the crash at 7 loses iteration 6
    assert (tmp_path / "resumed" / "last_checkpoint").read_text() == "model_0000005.pth"

    log = IterLog()
    resumed, sched, start = make_run(tmp_path / "resumed", seed=123, hooks=[log], resume=True,
                                     weights="ignored.pth")  # other init, other RNG
    assert start.iteration == resumed.start_iter == 6
    resumed.train()
    assert log.iters == [6, 7, 8, 9] and resumed.iter == 10

    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for p_full, p_res in zip(full.model.parameters(), resumed.model.parameters()):
        buf_full = full.optimizer.state[p_full]["momentum_buffer"]
        assert torch.equal(buf_full, resumed.optimizer.state[p_res]["momentum_buffer"])
    assert sched.state_dict() == full_sched.state_dict() == {"base_lrs": [0.05, 0.05], "last_epoch": 10}
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [g["lr"] for g in full.optimizer.param_groups]
    assert torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)["trainer"]["iteration"] == 9


def test_load_without_resume_takes_weights_only(tmp_path):
    src, _, _ = make_run(tmp_path / "a", seed=0, max_iter=3)
    src.train()
    dst, sched, start = make_run(tmp_path / "b", seed=1, max_iter=3, weights=str(tmp_path / "a" / "model_final.pth"))
    assert start.iteration == 0 and start.trainer_state is None
    assert torch.equal(dst.model.linear.weight, src.model.linear.weight)
    assert dst.optimizer.state == {} and sched.last_epoch == 0 and dst.iter == 0


def test_resuming_a_weights_file_names_it(tmp_path):
    src, _, _ = make_run(tmp_path / "a", seed=0, max_iter=3)
    src.train()
    weights_only = {"model": torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)["model"]}
    torch.save(weights_only, tmp_path / "a" / "weights.pth")
    (tmp_path / "a" / "last_checkpoint").write_text("weights.pth")
    with pytest.raises(CheckpointReadError, match=r"weights\.pth has no iteration.*give it as weights="):
        make_run(tmp_path / "a", seed=0, resume=True)


def test_losses_and_data_time_recorded():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return {"loss_a": self.w * 2.0, "loss_b": self.w * 0.5}

    model = Fixed()
    trainer = Trainer(model=model, data_loader=iter(lambda: [0], None), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1)
    trainer.train()
    s = trainer.storage
    assert (s.history("loss_a").latest(), s.history("loss_b").latest(), s.history("total_loss").latest()) == (2.0, 0.5, 2.5)
    assert "data_time" in s.histories()
    assert model.w.item() == pytest.approx(1.0 - 0.1 * 2.5)  # d(total)/dw = 2.5


class NaNAt(nn.Module):
    """Regressor-like model whose loss_b becomes NaN on the forward of iteration ``bad_iter``."""

    def __init__(self, bad_iter: int) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.calls = 0
        self.bad_iter = bad_iter

    def forward(self, batch):
        out = self.linear(torch.ones(1, 1)).sum()
        bad = self.calls == self.bad_iter
        self.calls += 1
        return {"loss_a": out.pow(2), "loss_b": out * (float("nan") if bad else 1.0)}


class Snapshot(Hook):
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.weights: dict[int, torch.Tensor] = {}

    def after_step(self, loop):
        self.weights[loop.iter] = self.model.linear.weight.detach().clone()


def test_non_finite_loss_stops_before_update(tmp_path):
    torch.manual_seed(0)
    model = NaNAt(bad_iter=7)
    snap = Snapshot(model)
    ckpt = Checkpointer(model, str(tmp_path))
    trainer = Trainer(
        model=model,
        data_loader=iter(lambda: [0], None),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        checkpointer=ckpt,
        max_iter=10,
        hooks=[PeriodicCheckpointer(ckpt, period=3), snap],
    )
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert "iteration 7" in msg and "loss_b=nan" in msg and "total_loss=nan" in msg and "loss_a=" in msg
    assert sorted(snap.weights) == list(range(7))
    assert torch.equal(model.linear.weight, snap.weights[6])  # iteration 7 changed nothing
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    assert not (tmp_path / "model_final.pth").exists()
    saved = torch.load(tmp_path / "model_0000005.pth", weights_only=True)["model"]
    assert torch.equal(saved["linear.weight"], snap.weights[5])


class NaNWithBatchNorm(nn.Module):
    """A BatchNorm feeding a loss that is NaN on the forwards listed in ``bad``."""

    def __init__(self, bad: set[int]) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.linear = nn.Linear(2, 1)
        self.calls, self.bad = 0, bad

    def forward(self, batch):
        x = torch.randn(4, 2) + 3.0
        out = self.linear(self.norm(x)).mean()
        bad = self.calls in self.bad
        self.calls += 1
        return {"loss": out.pow(2) * (float("nan") if bad else 1.0)}


def test_non_finite_steps_can_be_skipped_up_to_a_limit(tmp_path, caplog):
    model = NaNWithBatchNorm(bad={2, 5})
    states = {}

    class Record(Hook):
        def after_step(self, loop):
            states[loop.iter] = {k: v.clone() for k, v in model.state_dict().items()}

    trainer = Trainer(model=model, data_loader=iter(lambda: [0], None), max_iter=8, seed=0, max_nonfinite_steps=2,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), hooks=[Record()])
    trainer.train()
    assert trainer.iter == 8 and trainer.nonfinite_steps == 2
    for skipped in (2, 5):  # weights and BatchNorm statistics as after the step before
        for k, v in states[skipped - 1].items():
            assert torch.equal(states[skipped][k], v), (skipped, k)
    assert not torch.equal(states[3]["linear.weight"], states[2]["linear.weight"])  # training went on
    assert trainer.storage.history("nonfinite_steps").values()[-1][0] == 2
    assert "iteration 5" in caplog.text and "Step skipped (2 of at most 2" in caplog.text
    assert trainer.state_dict()["nonfinite_steps"] == 2

    other = NaNWithBatchNorm(bad={1, 3})
    again = Trainer(model=other, data_loader=iter(lambda: [0], None), max_iter=8,
                    optimizer=torch.optim.SGD(other.parameters(), lr=0.1), max_nonfinite_steps=1)
    with pytest.raises(FloatingPointError, match=r"iteration 3: .* 1 such step\(s\) were already skipped: the limit "
                                                 r"train\.max_nonfinite_steps=1 is reached"):
        again.train()
    with pytest.raises(ConfigError, match="max_nonfinite_steps must be >= 0"):
        Trainer(model=model, data_loader=[], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1,
                max_nonfinite_steps=-1)


def test_infinite_loss_named():
    class Inf(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return {"loss_x": self.w * float("inf")}

    model = Inf()
    trainer = Trainer(model=model, data_loader=iter(lambda: [0], None), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=2)
    with pytest.raises(FloatingPointError, match=r"iteration 0: total_loss=inf, loss_x=inf \(non-finite: loss_x\)"):
        trainer.train()


def _clip_run(grad_clip):
    """One SGD step (lr 0.1) of a Linear(2, 1) whose loss is 10 * (w1 + w2 + b): every grad is 10."""
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, batch):
            return {"loss": 10 * (self.m.weight.sum() + self.m.bias.sum())}

    wrapped = Wrap()
    Trainer(
        model=wrapped,
        data_loader=iter(lambda: [0], None),
        optimizer=torch.optim.SGD(wrapped.parameters(), lr=0.1),
        max_iter=1,
        grad_clip=grad_clip,
    ).train()
    return model.weight.detach().flatten().tolist() + model.bias.detach().tolist()


def test_grad_clip_value_norm_full_model():
    assert _clip_run(None) == pytest.approx([-1.0, -1.0, -1.0])  # 0 - 0.1 * 10
    assert _clip_run({"clip_type": "value", "clip_value": 1.0}) == pytest.approx([-0.1, -0.1, -0.1])
    # per parameter: weight grad (10, 10) has norm 14.14 -> scaled to norm 1: 1/sqrt(2) each; bias grad 10 -> 1
    s = 1 / math.sqrt(2)
    assert _clip_run({"clip_type": "norm", "clip_value": 1.0}) == pytest.approx([-0.1 * s, -0.1 * s, -0.1], rel=1e-4)
    # one norm over all: sqrt(300) -> each grad 10 / sqrt(300) = 0.57735
    g = 10 / math.sqrt(300)
    assert _clip_run({"clip_type": "full_model", "clip_value": 1.0}) == pytest.approx([-0.1 * g] * 3, rel=1e-4)
    assert _clip_run({"enabled": False, "clip_type": "value", "clip_value": 1.0}) == pytest.approx([-1.0] * 3)


def test_grad_clip_config_errors():
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="Did you mean 'clip_value'"):
        Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1, grad_clip={"clip_valu": 1.0})
    with pytest.raises(ConfigError, match="'value', 'norm', 'full_model'"):
        Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1, grad_clip={"clip_type": "l2"})


def test_amp_fp16_on_cpu_is_a_config_error():
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="amp='bf16'"):
        Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1, amp="fp16")
    with pytest.raises(ConfigError, match="Did you mean 'bf16'"):
        Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1, amp="bf61")


class _DtypeProbe(nn.Module):
    """One linear layer; ``seen`` records the dtype of its output at every step."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.seen = []

    def forward(self, batch):
        out = self.linear(torch.ones(1, 2))
        self.seen.append(out.dtype)
        return {"loss": out.float().pow(2).mean()}


def _probe_trainer(model: _DtypeProbe, *, amp: str, max_iter: int) -> Trainer:
    return Trainer(model=model, data_loader=iter(lambda: [0], None), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   max_iter=max_iter, amp=amp)


def test_amp_bf16_on_cpu_runs_under_autocast():
    model = _DtypeProbe()
    before = model.linear.weight.detach().clone()
    _probe_trainer(model, amp="bf16", max_iter=2).train()
    assert model.seen == [torch.bfloat16, torch.bfloat16]
    assert model.linear.weight.dtype == torch.float32 and not torch.equal(model.linear.weight, before)


def test_bad_model_output_and_finite_loader():
    class NotDict(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return [self.w]

    model = NotDict()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="dict of losses"):
        Trainer(model=model, data_loader=iter(lambda: [0], None), optimizer=opt, max_iter=1).train()
    model2 = Regressor()
    with pytest.raises(RuntimeError, match="ran out at iteration 2"):
        batches = random_batches()
        Trainer(model=model2, data_loader=[next(batches), next(batches)], optimizer=build_optimizer(model2, {"name": "SGD", "base_lr": 0.1}), max_iter=5).train()


def test_state_dict_is_weights_only_loadable_and_keeps_the_seed():
    model = nn.Linear(1, 1)
    trainer = Trainer(model=model, data_loader=[], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1,
                      seed=7)
    trainer.iter = 41
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = Trainer(model=model, data_loader=[], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1,
                    seed=8)
    other.load_state_dict(state)
    assert (other.iter, other.seed) == (41, 7)


def test_each_step_draws_from_seed_and_iteration_only():
    """Step i's random numbers depend on (seed, rank, i): not on what ran before it (e.g. an evaluation)."""

    class Draw(Hook):
        def __init__(self, noisy_at=None):
            self.draws, self.noisy_at = [], noisy_at

        def before_step(self, loop):
            self.draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))

        def after_step(self, loop):
            if loop.iter == self.noisy_at:  # e.g. an evaluation consuming random numbers
                random.random(), np.random.rand(100), torch.rand(100)

    def draws(seed, noisy_at=None):
        hook = Draw(noisy_at)
        model = Regressor()
        Trainer(model=model, data_loader=random_batches(), optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                max_iter=4, hooks=[hook], seed=seed).train()
        return hook.draws

    assert draws(1) == draws(1, noisy_at=1)
    assert draws(1)[2:] != draws(2)[2:]
    assert len(set(draws(1))) == 4  # a new draw every step


def test_a_list_of_hooks_is_sorted_by_priority_and_keyed_by_class():
    class P(Hook):
        def __init__(self, p):
            self.priority = p

    model = nn.Linear(1, 1)
    hooks = [P(70), None, P(10), P(50), IterationTimer()]
    trainer = Trainer(model=model, data_loader=[], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1, hooks=hooks)
    assert [h.priority for h in trainer.hooks] == [0, 10, 50, 70]
    assert list(trainer._hooks) == ["IterationTimer", "test_a_list_of_hooks_is_sorted_by_priority_and_keyed_by_class.<locals>.P",
                                    *(f"test_a_list_of_hooks_is_sorted_by_priority_and_keyed_by_class.<locals>.P#{i}"
                                      for i in (1, 2))]
    with pytest.raises(TypeError, match="hook 'x' must be a Hook instance, got int"):
        Trainer(model=model, data_loader=[], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_iter=1,
                hooks={"x": 3})


def test_hook_states_keyed_by_config_key(caplog, tmp_path):
    from framework.engine import build_hooks

    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    offered = {"checkpointer": Checkpointer(model, str(tmp_path)), "metric_names": None}
    hooks = build_hooks({"best": {"name": "BestCheckpointer", "metric": "bbox/AP"}, "timer": "IterationTimer"},
                        offered=offered)
    trainer = Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1, hooks=hooks)
    trainer.hooks[1].best_value, trainer.hooks[1].best_iter = 40.0, 9
    state = trainer.state_dict()
    assert state["hooks"] == {"best": {"best_value": 40.0, "best_iter": 9}}  # stateless hooks omitted

    fresh = Trainer(model=model, data_loader=[], optimizer=opt, max_iter=1,
                    hooks=build_hooks({"best": "BestCheckpointer"}, offered=offered))
    state["hooks"]["gone"] = {"x": 1}
    fresh.load_state_dict(state)
    assert fresh.hooks[0].best_value == 40.0 and fresh.start_iter == state["iteration"] + 1
    assert "'gone'" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast with a GradScaler needs CUDA")
def test_amp_fp16_on_cuda_with_grad_scaler(tmp_path):
    torch.manual_seed(0)
    model = Regressor().cuda()

    def cuda_batches():
        for batch in random_batches():
            yield [{k: v.cuda() for k, v in d.items()} for d in batch]

    ckpt = Checkpointer(model, str(tmp_path))
    trainer = Trainer(
        model=model,
        data_loader=cuda_batches(),
        optimizer=build_optimizer(model, {"name": "SGD", "base_lr": 0.01}),
        checkpointer=ckpt,
        max_iter=3,
        amp="fp16",
        hooks=[PeriodicCheckpointer(ckpt, period=3)],
    )
    before = model.linear.weight.detach().clone()
    trainer.train()
    assert trainer.grad_scaler is not None and not torch.equal(model.linear.weight, before)
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert "grad_scaler" in saved["trainer"] and "seed" in saved["trainer"]


@pytest.mark.parametrize("native, expected, dtype", [(True, "bf16", torch.bfloat16), (False, "none", torch.float32)])
def test_amp_auto_trains_in_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, native, expected, dtype):
    """train.amp=auto never silently lowers precision on a CPU that would emulate bf16."""
    from framework.layers import amp as amp_module

    monkeypatch.setattr(amp_module, "has_native_bf16", lambda device_type: native)
    model = _DtypeProbe()
    trainer = _probe_trainer(model, amp="auto", max_iter=1)
    assert trainer.amp == expected
    trainer.train()
    assert model.seen == [dtype]
