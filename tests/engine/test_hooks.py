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


def checkpointer_and_trainer(tmp_path, hooks_of, *, max_iter=4):
    """A trainer whose hooks (``hooks_of(checkpointer)``) save through its checkpointer."""
    model = Tiny()
    ckpt = Checkpointer(model, str(tmp_path))
    trainer = Trainer(model=model, data_loader=ones(), optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                      checkpointer=ckpt, max_iter=max_iter, hooks=hooks_of(ckpt))
    return ckpt, trainer


class Recorder(Hook):
    def __init__(self, tag: str, log: list, priority: int = Priority.NORMAL) -> None:
        self.tag, self.log, self.priority = tag, log, priority

    def before_train(self, loop):
        self.log.append((self.tag, "before_train", loop.iter))

    def before_step(self, loop):
        self.log.append((self.tag, "before_step", loop.iter))

    def after_backward(self, loop):
        self.log.append((self.tag, "after_backward", loop.iter))

    def after_step(self, loop):
        self.log.append((self.tag, "after_step", loop.iter))

    def after_eval(self, loop, iteration, metrics):
        self.log.append((self.tag, "after_eval", iteration, dict(metrics)))

    def after_train(self, loop):
        self.log.append((self.tag, "after_train", loop.iter))


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


def test_a_mapping_of_hooks_runs_in_its_order_and_keys_their_state(tmp_path):
    log: list = []
    hooks = {"late": Recorder("L", log, 0), "early": Recorder("E", log, 100)}  # the builder's order wins
    trainer = make_trainer(hooks=hooks, max_iter=1)
    trainer.train()
    assert [entry[0] for entry in log[:2]] == ["L", "E"]
    assert trainer.hooks == list(hooks.values())


def test_after_train_runs_after_an_exception():
    log: list = []

    class Boom(Hook):
        def after_step(self, loop):
            if loop.iter == 1:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(hooks=[Recorder("R", log), Boom()], max_iter=5).train()
    assert log[-1] == ("R", "after_train", 1)


def test_an_evaluation_is_framed_by_every_hook_and_train_returns_the_last():
    log: list = []

    class Evaluator(Hook):
        priority = Priority.BELOW_NORMAL

        def after_step(self, loop):
            assert loop.evaluate(loop.iter, lambda: {"bbox/AP": float(loop.iter)}) == {"bbox/AP": float(loop.iter)}

    class Framing(Recorder):
        def before_eval(self, loop, iteration):
            self.log.append((self.tag, "before_eval", iteration))

    trainer = make_trainer(hooks=[Framing("early", log, 0), Evaluator(), Framing("late", log, 90)], max_iter=2)
    assert trainer.train() == {"bbox/AP": 1.0}
    evals = [e for e in log if "eval" in e[1]]
    # before_eval in priority order, after_eval in reverse (the first to prepare is the last to see
    # the result), all while the evaluating hook runs (before "late"'s after_step)
    assert evals[:4] == [("early", "before_eval", 0), ("late", "before_eval", 0),
                         ("late", "after_eval", 0, {"bbox/AP": 0.0}), ("early", "after_eval", 0, {"bbox/AP": 0.0})]
    assert evals[4:] == [("early", "before_eval", 1), ("late", "before_eval", 1),
                         ("late", "after_eval", 1, {"bbox/AP": 1.0}), ("early", "after_eval", 1, {"bbox/AP": 1.0})]
    assert log.index(("early", "after_eval", 0, {"bbox/AP": 0.0})) < log.index(("late", "after_step", 0))
    assert make_trainer(max_iter=1).train() == {}  # no evaluation: nothing to return


def test_hooks_registry_is_listed():
    assert ALL_REGISTRIES["HOOKS"] is HOOKS
    assert {"IterationTimer", "LRScheduler", "PeriodicCheckpointer", "BestCheckpointer", "EvalHook", "PeriodicWriter"} <= set(HOOKS.names())


def _offered(tmp_path, **more):
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return {"model": model, "optimizer": opt, "scheduler": None, "checkpointer": Checkpointer(model, str(tmp_path)),
            "writers": [], "evaluate": lambda: {}, "metric_names": None, **more}


def test_build_hooks_from_dict_sorted_and_none_removes(tmp_path):
    cfg = OmegaConf.create(
        {
            "writer": {"name": "PeriodicWriter", "period": 5},
            "checkpointer": {"name": "PeriodicCheckpointer", "period": 7},
            "timer": "IterationTimer",
            "eval": None,  # removed from the command line: hooks.eval=null
            "LRScheduler": {},  # no name: the key is the name
        }
    )
    offered = _offered(tmp_path)
    hooks = build_hooks(cfg, offered=offered)
    assert list(hooks) == ["timer", "LRScheduler", "checkpointer", "writer"]
    assert [type(h).__name__ for h in hooks.values()] == ["IterationTimer", "LRScheduler", "PeriodicCheckpointer",
                                                          "PeriodicWriter"]
    assert hooks["checkpointer"].period == 7 and hooks["checkpointer"].max_to_keep == 3 and hooks["writer"].period == 5
    # dependencies come from what the builder offers, by constructor parameter name
    assert hooks["checkpointer"].checkpointer is offered["checkpointer"]
    assert hooks["LRScheduler"].optimizer is offered["optimizer"]


def test_build_hooks_priority_override_and_ties_by_key(tmp_path):
    hooks = build_hooks(
        {
            "z_writer": {"name": "PeriodicWriter", "priority": 5},
            "timer": "IterationTimer",
            "b_eval": {"name": "EvalHook", "priority": "low"},
            "a_best": {"name": "BestCheckpointer"},  # LOW (70) too: tie broken by key
        },
        offered=_offered(tmp_path),
    )
    assert list(hooks) == ["timer", "z_writer", "a_best", "b_eval"]
    assert PeriodicWriter.priority == Priority.LOWEST and hooks["z_writer"].priority == Priority.LOWEST  # untouched


def test_build_hooks_errors(tmp_path):
    offered = _offered(tmp_path)
    with pytest.raises(ConfigError, match=r"hooks\.ckpt\.peroid.*Did you mean 'period'"):
        build_hooks({"ckpt": {"name": "PeriodicCheckpointer", "peroid": 3}}, offered=offered)
    with pytest.raises(ConfigError, match="Did you mean 'EvalHook'"):
        build_hooks({"eval": "EvalHok"}, offered=offered)
    with pytest.raises(ConfigError, match=r"hooks\.w\.priority.*LOWEST"):
        build_hooks({"w": {"name": "PeriodicWriter", "priority": "LOWES"}}, offered=offered)
    # a dependency the builder does not offer is named, with what it does offer
    with pytest.raises(TypeError, match=r"needs runtime argument\(s\) \['checkpointer'\].*offers \['evaluate'"):
        build_hooks({"ckpt": "PeriodicCheckpointer"}, offered={"evaluate": lambda: {}})


def test_iteration_timer_skips_warmup():
    trainer = make_trainer(hooks=[IterationTimer(warmup_iter=2)], max_iter=5)
    trainer.train()
    assert [itr for _, itr in trainer.storage.history("time").values()] == [1, 2, 3, 4]
    assert trainer.hooks[0].total_time > 0


def test_lr_scheduler_hook_puts_lr_and_steps():
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = build_lr_scheduler(opt, {"name": "WarmupMultiStepLR", "steps": (2,), "gamma": 0.5, "warmup_iters": 0},
                               max_iter=4)
    trainer = Trainer(model=model, data_loader=ones(), optimizer=opt, max_iter=4, hooks=[LRScheduler(opt, sched)])
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
    make_trainer(hooks=[PeriodicWriter([writer], period=3)], max_iter=7).train()
    assert writer.writes == [2, 5, 6, 6]  # every 3 steps, the last step, once more at the end
    assert writer.closed == 0  # whoever made the writers closes them (the run does)


def test_periodic_checkpointer_files_and_keep_last(tmp_path):
    _, trainer = checkpointer_and_trainer(tmp_path, lambda c: [PeriodicCheckpointer(c, period=2, max_to_keep=2)],
                                          max_iter=7)
    trainer.train()
    # saved after iterations 1, 3, 5 (0-based); 1 pruned; final after iteration 6
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth", "model_0000005.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert final["iteration"] == 6 and final["trainer"]["iteration"] == 6
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["trainer"]["iteration"] == 3


def _eval_returning(values):
    calls = []

    def evaluate():
        calls.append(len(calls))
        return {"segm/AP": values[len(calls) - 1], "segm/AP50": 0.0, "bbox/AP": 1.0}

    return evaluate, calls


def test_eval_hook_period_and_end():
    evaluate, calls = _eval_returning([10.0, 20.0, 30.0])
    log: list = []
    trainer = make_trainer(hooks=[EvalHook(evaluate, period=3), Recorder("R", log)], max_iter=7)
    final = trainer.train()
    # after iterations 2 and 5 (every 3 steps) and after the last one (6), not twice at the end
    assert len(calls) == 3
    assert trainer.storage.history("segm/AP").values() == [(10.0, 2), (20.0, 5), (30.0, 6)]
    assert [(e[2], e[3]["segm/AP"]) for e in log if e[1] == "after_eval"] == [(2, 10.0), (5, 20.0), (6, 30.0)]
    assert final == {"segm/AP": 30.0, "segm/AP50": 0.0, "bbox/AP": 1.0}


def test_eval_hook_only_at_end_and_not_after_failure():
    evaluate, calls = _eval_returning([1.0])
    make_trainer(hooks=[EvalHook(evaluate, period=0)], max_iter=4).train()
    assert len(calls) == 1

    class Fail(Hook):
        def after_step(self, loop):
            raise RuntimeError("fail")

    evaluate, calls = _eval_returning([1.0])
    with pytest.raises(RuntimeError, match="fail"):
        make_trainer(hooks=[EvalHook(evaluate, period=0), Fail()], max_iter=4).train()
    assert calls == []


def test_eval_hook_errors():
    with pytest.raises(TypeError, match="'bbox/AP': 'high'"):
        make_trainer(hooks=[EvalHook(lambda: {"bbox/AP": "high"})]).train()
    with pytest.raises(TypeError, match="flat dict of numbers; got 'bbox'"):
        make_trainer(hooks=[EvalHook(lambda: {"bbox": {"AP": 1.0}})]).train()
    with pytest.raises(TypeError, match="flat dict of metrics, got list"):
        make_trainer(hooks=[EvalHook(lambda: [1.0])]).train()


def test_best_checkpointer_max(tmp_path):
    evaluate, _ = _eval_returning([1.0, 3.0, 2.0])
    _, trainer = checkpointer_and_trainer(tmp_path, lambda c: {
        "eval": EvalHook(evaluate, period=2), "best": BestCheckpointer(c, metric="segm/AP", mode="max"),
        "ckpt": PeriodicCheckpointer(c, period=100)}, max_iter=6)
    trainer.train()
    best = trainer.hooks[1]
    assert isinstance(best, BestCheckpointer)
    assert (best.best_value, best.best_iter) == (3.0, 3)  # evals after iterations 1, 3 and 5
    saved = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert saved["iteration"] == 3
    assert saved["trainer"]["hooks"]["best"] == {"best_value": 3.0, "best_iter": 3}
    # the best file does not move the resume pointer
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_best_checkpointer_min_and_resumed_state(tmp_path):
    evaluate, _ = _eval_returning([5.0, 4.0])
    holder = {}

    def hooks(c):
        holder["best"] = best = BestCheckpointer(c, metric="segm/AP", mode="min")
        best.load_state_dict({"best_value": 4.5, "best_iter": 99})  # from an earlier run
        return [EvalHook(evaluate, period=2), best]

    _, trainer = checkpointer_and_trainer(tmp_path, hooks, max_iter=4)
    trainer.train()
    assert (holder["best"].best_value, holder["best"].best_iter) == (4.0, 3)  # 5.0 did not beat 4.5; 4.0 did


MASK_METRICS = {"bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50", "segm/AP-person"}


def test_best_checkpointer_follows_the_evaluators(tmp_path):
    ckpt = Checkpointer(Tiny(), str(tmp_path))
    assert BestCheckpointer(ckpt, MASK_METRICS).metric == "segm/AP"  # masks evaluated: mask AP
    assert BestCheckpointer(ckpt, {"bbox/AP", "bbox/AP50"}).metric == "bbox/AP"  # boxes only: box AP
    assert BestCheckpointer(ckpt, MASK_METRICS, metric="segm/AP-person").metric == "segm/AP-person"
    assert BestCheckpointer(ckpt, None).metric is None  # not known before evaluating: chosen at the first one


def test_best_checkpointer_refuses_a_metric_no_evaluator_produces(tmp_path):
    ckpt = Checkpointer(Tiny(), str(tmp_path))
    with pytest.raises(ConfigError, match=r"hooks\.best_checkpointer\.metric.*'segm/AP5'.*Did you mean 'segm/AP50'"
                                         r".*Available: bbox/AP, bbox/AP50, segm/AP, segm/AP50 \("):
        BestCheckpointer(ckpt, MASK_METRICS, metric="segm/AP5")
    with pytest.raises(ConfigError, match=r"'segm/AP' is not among.*Available: bbox/AP"):
        BestCheckpointer(ckpt, {"bbox/AP"}, metric="segm/AP")  # a box-only model with the mask metric
    with pytest.raises(ConfigError, match="no default metric"):
        BestCheckpointer(ckpt, {"count/images"})


def test_best_checkpointer_checks_at_the_first_evaluation_when_not_known_before(tmp_path):
    evaluate, _ = _eval_returning([1.0])
    with pytest.raises(ConfigError, match="Did you mean 'segm/AP50'"):
        checkpointer_and_trainer(tmp_path, lambda c: [EvalHook(evaluate), BestCheckpointer(c, metric="segm/AP5")],
                                 max_iter=2)[1].train()
    evaluate, _ = _eval_returning([7.0])
    _, trainer = checkpointer_and_trainer(tmp_path / "b", lambda c: [EvalHook(evaluate), BestCheckpointer(c)],
                                          max_iter=2)
    trainer.train()
    assert (trainer.hooks[1].metric, trainer.hooks[1].best_value) == ("segm/AP", 7.0)
