"""Hooks: call order and priorities, building from a config dict, and each built-in hook."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from framework.checkpoint import Checkpointer
from framework.engine import (
    HOOKS,
    BestCheckpointer,
    EvalHook,
    Hook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    Priority,
    Trainer,
    build_hooks,
    build_lr_scheduler,
)
from framework.errors import ConfigError
from framework.registry import ALL_REGISTRIES


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        return {"loss_a": (self.linear(x) - 1).pow(2).mean()}


def ones():
    while True:
        yield [{"x": torch.ones(1)}]


def make_trainer(tmp_path=None, *, hooks=(), max_iter=4, **kw) -> Trainer:
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ckpt = Checkpointer(model, str(tmp_path)) if tmp_path is not None else None
    return Trainer(model=model, data_loader=ones(), optimizer=opt, checkpointer=ckpt, max_iter=max_iter, hooks=hooks, **kw)


class Recorder(Hook):
    def __init__(self, tag: str, log: list, priority: int = Priority.NORMAL) -> None:
        self.tag, self.log, self.priority = tag, log, priority

    def before_train(self):
        self.log.append((self.tag, "before_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.tag, "before_step", self.trainer.iter))

    def after_backward(self):
        self.log.append((self.tag, "after_backward", self.trainer.iter))

    def after_step(self):
        self.log.append((self.tag, "after_step", self.trainer.iter))

    def after_train(self):
        self.log.append((self.tag, "after_train", self.trainer.iter))


def test_call_order_and_priorities():
    log: list = []
    hooks = [Recorder("A", log, 50), Recorder("B", log, 10), Recorder("C", log, 50)]
    make_trainer(hooks=hooks, max_iter=2).train()
    expected = [(t, "before_train", 0) for t in "BAC"]
    for it in range(2):
        for point in ("before_step", "after_backward", "after_step"):
            expected += [(t, point, it) for t in "BAC"]  # B first (10), then A, C in given order
    expected += [(t, "after_train", 2) for t in "BAC"]  # iter == max_iter after success
    assert log == expected


def test_after_train_runs_after_an_exception():
    log: list = []

    class Boom(Hook):
        def after_step(self):
            if self.trainer.iter == 1:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(hooks=[Recorder("R", log), Boom()], max_iter=5).train()
    assert log[-1] == ("R", "after_train", 1)


def test_hooks_registry_is_listed():
    assert ALL_REGISTRIES["HOOKS"] is HOOKS
    assert {"IterationTimer", "LRScheduler", "PeriodicCheckpointer", "BestCheckpointer", "EvalHook", "PeriodicWriter"} <= set(HOOKS.names())


def test_build_hooks_from_dict_sorted_and_none_removes():
    cfg = OmegaConf.create(
        {
            "writer": {"name": "PeriodicWriter", "period": 5},
            "checkpointer": {"name": "PeriodicCheckpointer", "period": 7},
            "timer": "IterationTimer",
            "eval": None,  # removed from the command line: hooks.eval=null
            "LRScheduler": {},  # no name: the key is the name
        }
    )
    hooks = build_hooks(cfg)
    assert [type(h).__name__ for h in hooks] == ["IterationTimer", "LRScheduler", "PeriodicCheckpointer", "PeriodicWriter"]
    assert [h.name for h in hooks] == ["timer", "LRScheduler", "checkpointer", "writer"]
    assert [h.priority for h in hooks] == [0, 30, 50, 100]
    assert hooks[2].period == 7 and hooks[2].max_to_keep == 3 and hooks[3].period == 5


def test_build_hooks_priority_override_and_ties_by_key():
    hooks = build_hooks(
        {
            "z_writer": {"name": "PeriodicWriter", "priority": 5},
            "timer": "IterationTimer",
            "b_eval": {"name": "EvalHook", "priority": "low"},
            "a_best": {"name": "BestCheckpointer"},  # LOW (70) too: tie broken by key
        }
    )
    assert [(h.name, h.priority) for h in hooks] == [("timer", 0), ("z_writer", 5), ("a_best", 70), ("b_eval", 70)]
    assert PeriodicWriter.priority == Priority.LOWEST  # the class default is untouched


def test_build_hooks_errors():
    with pytest.raises(ConfigError, match=r"hooks\.ckpt\.peroid.*Did you mean 'period'"):
        build_hooks({"ckpt": {"name": "PeriodicCheckpointer", "peroid": 3}})
    with pytest.raises(ConfigError, match="Did you mean 'EvalHook'"):
        build_hooks({"eval": "EvalHok"})
    with pytest.raises(ConfigError, match=r"hooks\.w\.priority.*LOWEST"):
        build_hooks({"w": {"name": "PeriodicWriter", "priority": "LOWES"}})


def test_iteration_timer_skips_warmup():
    trainer = make_trainer(hooks=[IterationTimer(warmup_iter=2)], max_iter=5)
    trainer.train()
    assert [itr for _, itr in trainer.storage.history("time").values()] == [1, 2, 3, 4]
    assert trainer.hooks[0].total_time > 0


def test_lr_scheduler_hook_puts_lr_and_steps():
    trainer = make_trainer(hooks=[LRScheduler()], max_iter=4)
    trainer.scheduler = build_lr_scheduler(
        trainer.optimizer, {"name": "WarmupMultiStepLR", "steps": (2,), "gamma": 0.5, "warmup_iters": 0}, max_iter=4
    )
    trainer.train()
    assert trainer.storage.history("lr").values() == [(0.01, 0), (0.01, 1), (0.005, 2), (0.005, 3)]


class CountingWriter:
    def __init__(self) -> None:
        self.writes: list[int] = []
        self.closed = 0

    def write(self):
        from framework.utils.events import get_event_storage

        self.writes.append(get_event_storage().iter)

    def close(self):
        self.closed += 1


def test_periodic_writer_period_last_step_and_end():
    writer = CountingWriter()
    make_trainer(hooks=[PeriodicWriter(period=3)], writers=[writer], max_iter=7).train()
    assert writer.writes == [2, 5, 6, 6]  # every 3 steps, the last step, once more at the end
    assert writer.closed == 0  # whoever made the writers closes them (the run does)


def test_periodic_checkpointer_files_and_keep_last(tmp_path):
    trainer = make_trainer(tmp_path, hooks=[PeriodicCheckpointer(period=2, max_to_keep=2)], max_iter=7)
    trainer.train()
    # saved after iterations 1, 3, 5 (0-based); 1 pruned; final after iteration 6
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth", "model_0000005.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 6 and final["trainer"]["iteration"] == 6
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["trainer"]["iteration"] == 3


def test_checkpointing_hook_needs_a_checkpointer():
    with pytest.raises(ConfigError, match="checkpointer"):
        make_trainer(hooks=[PeriodicCheckpointer(period=2)]).train()


def _eval_returning(values):
    calls = []

    def test_fn():
        calls.append(len(calls))
        return {"segm": {"AP": values[len(calls) - 1], "AP50": 0.0}, "bbox": {"AP": 1.0}}

    return test_fn, calls


def test_eval_hook_period_and_end():
    test_fn, calls = _eval_returning([10.0, 20.0, 30.0])
    trainer = make_trainer(hooks=[EvalHook(period=3)], max_iter=7, test_fn=test_fn)
    trainer.train()
    # after iterations 2 and 5 (every 3 steps) and after the last one (6), not twice at the end
    assert len(calls) == 3
    assert trainer.storage.history("segm/AP").values() == [(10.0, 2), (20.0, 5), (30.0, 6)]
    assert trainer.latest_metrics == {"segm/AP": 30.0, "segm/AP50": 0.0, "bbox/AP": 1.0}
    assert trainer.latest_metrics_iter == 6


def test_eval_hook_only_at_end_and_not_after_failure():
    test_fn, calls = _eval_returning([1.0])
    make_trainer(hooks=[EvalHook(period=0)], max_iter=4, test_fn=test_fn).train()
    assert len(calls) == 1

    class Fail(Hook):
        def after_step(self):
            raise RuntimeError("fail")

    test_fn, calls = _eval_returning([1.0])
    with pytest.raises(RuntimeError, match="fail"):
        make_trainer(hooks=[EvalHook(period=0), Fail()], max_iter=4, test_fn=test_fn).train()
    assert calls == []


def test_eval_hook_errors():
    with pytest.raises(ConfigError, match="test_fn"):
        make_trainer(hooks=[EvalHook()]).train()
    with pytest.raises(TypeError, match="'bbox/AP': 'high'"):
        make_trainer(hooks=[EvalHook()], test_fn=lambda: {"bbox": {"AP": "high"}}).train()


def test_best_checkpointer_max(tmp_path):
    test_fn, _ = _eval_returning([1.0, 3.0, 2.0])
    hooks = [EvalHook(period=2), BestCheckpointer(metric="segm/AP", mode="max"), PeriodicCheckpointer(period=100)]
    trainer = make_trainer(tmp_path, hooks=hooks, max_iter=6, test_fn=test_fn)
    trainer.train()
    best = trainer.hooks[-1]
    assert isinstance(best, BestCheckpointer)
    assert (best.best_value, best.best_iter) == (3.0, 3)  # evals after iterations 1, 3 and 5
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert saved["iteration"] == 3
    assert saved["trainer"]["hooks"]["BestCheckpointer"] == {"best_value": 3.0, "best_iter": 3}
    # the best file does not move the resume pointer
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_best_checkpointer_min_and_resumed_state(tmp_path):
    test_fn, _ = _eval_returning([5.0, 4.0])
    best = BestCheckpointer(metric="segm/AP", mode="min")
    best.load_state_dict({"best_value": 4.5, "best_iter": 99})  # from an earlier run
    trainer = make_trainer(tmp_path, hooks=[EvalHook(period=2), best], max_iter=4, test_fn=test_fn)
    trainer.train()
    assert (best.best_value, best.best_iter) == (4.0, 3)  # 5.0 did not beat 4.5; 4.0 did


def test_best_checkpointer_unknown_metric(tmp_path):
    test_fn, _ = _eval_returning([1.0])
    hooks = [EvalHook(), BestCheckpointer(metric="segm/AP5")]
    with pytest.raises(ConfigError, match="Did you mean 'segm/AP50'"):
        make_trainer(tmp_path, hooks=hooks, max_iter=2, test_fn=test_fn).train()
