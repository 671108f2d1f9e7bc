"""ModelEMA: timm's decay schedule, the average's arithmetic, evaluation on the average with the
trained weights restored, the best checkpoint holding the average, exact resume, and a whole job."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from framework.checkpoint import Checkpointer
from framework.engine import BestCheckpointer, EvalHook, Hook, ModelEMA, PeriodicCheckpointer, Priority, Trainer
from framework.engine.hooks.ema import ema_decay
from framework.engine.resume import resume_or_load
from framework.errors import ConfigError


def test_decay_schedule_is_timms():
    assert ema_decay(1, decay=0.99) == 0.0  # the first update copies the weights
    assert ema_decay(2, decay=0.99) == 0.99
    assert ema_decay(3, decay=0.99, update_after=2) == 0.0 and ema_decay(4, decay=0.99, update_after=2) == 0.99
    # warm-up: 1 - (1 + n / gamma) ** -power, n = update - 1
    assert ema_decay(2, decay=0.99, warmup=True) == pytest.approx(1 - 2 ** (-2 / 3))
    assert ema_decay(5, decay=0.99, warmup=True, warmup_gamma=2.0, warmup_power=1.0) == pytest.approx(1 - 1 / 3)
    assert ema_decay(10**9, decay=0.99, warmup=True) == 0.99  # capped at decay
    assert ema_decay(2, decay=0.99, warmup=True, min_decay=0.5) == 0.5  # floored at min_decay
    with pytest.raises(ConfigError, match="min_decay <= decay < 1"):
        ModelEMA(nn.Linear(1, 1), decay=1.0)


class Net(nn.Module):
    """A linear layer and a BatchNorm (float running stats, an int64 batch counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.norm = nn.BatchNorm1d(2)

    def forward(self, batch):
        x = self.norm(torch.stack([d["x"] for d in batch]))
        return {"loss_a": (self.linear(x) - 1).pow(2).mean()}


def batches():
    while True:
        yield [{"x": torch.randn(2)} for _ in range(4)]


class Snapshot(Hook):
    priority = Priority.NORMAL  # after ModelEMA's update of the same step

    def __init__(self, model: nn.Module) -> None:
        self.model, self.states = model, []

    def after_step(self, loop):
        self.states.append({k: v.clone() for k, v in self.model.state_dict().items()})


def _trainer(model, hooks, max_iter, checkpointer=None, seed=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(model=model, data_loader=batches(), optimizer=opt, checkpointer=checkpointer, max_iter=max_iter,
                   hooks=hooks, seed=seed)


def test_the_average_follows_the_recursion_and_copies_integer_buffers():
    torch.manual_seed(0)
    model = Net()
    ema, snap = ModelEMA(model, decay=0.75), Snapshot(model)
    _trainer(model, [ema, snap], max_iter=5).train()
    expected = dict(snap.states[0])  # update 1: a copy
    for state in snap.states[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * v if v.is_floating_point() else v for k, v in state.items()}
    for k, v in expected.items():
        torch.testing.assert_close(ema.average[k], v, rtol=1e-6, atol=1e-7, msg=k)
    assert ema.average["norm.num_batches_tracked"].item() == 5 and ema.updates == 5
    assert not torch.equal(ema.average["linear.weight"], model.linear.weight)  # an average, not the weights


def test_evaluation_runs_on_the_average_and_the_best_checkpoint_holds_it(tmp_path):
    torch.manual_seed(0)
    model = Net()
    ckpt = Checkpointer(model, str(tmp_path))
    ema = ModelEMA(model, decay=0.5)
    seen = []

    def evaluate():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"bbox/AP": 50.0 + len(seen)}

    trained = Snapshot(model)  # last in the dict: the weights training goes on with, after every other hook
    hooks = {"ema": ema, "ckpt": PeriodicCheckpointer(ckpt, period=100), "eval": EvalHook(evaluate, period=2),
             "best": BestCheckpointer(ckpt, {"bbox/AP"}), "trained": trained}
    _trainer(model, hooks, max_iter=4, checkpointer=ckpt).train()
    trained = trained.states
    assert len(seen) == 2  # after step 1 and after the last
    # the evaluation saw the average; training went on with the trained weights, restored exactly
    best = torch.load(tmp_path / "model_best.pth", weights_only=True)
    for k in ("linear.weight", "norm.running_mean"):
        torch.testing.assert_close(seen[-1][k], ema.average[k], rtol=0, atol=0)
        torch.testing.assert_close(best["model"][k], ema.average[k], rtol=0, atol=0)
        assert torch.equal(model.state_dict()[k], trained[-1][k])
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert torch.equal(final["model"]["linear.weight"], trained[-1]["linear.weight"])  # trained weights
    assert final["trainer"]["hooks"]["ema"]["updates"] == 4  # and the average, for resuming


def _run(out_dir, max_iter, *, resume=False):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = Checkpointer(model, str(out_dir), optimizer=opt)
    start = resume_or_load(ckpt, None, resume=resume)
    ema = ModelEMA(model, decay=0.6, warmup=True)
    trainer = Trainer(model=model, data_loader=batches(), optimizer=opt, checkpointer=ckpt, max_iter=max_iter,
                      hooks={"ema": ema, "ckpt": PeriodicCheckpointer(ckpt, period=3)}, seed=0)
    if start.trainer_state is not None:
        trainer.load_state_dict(start.trainer_state)
    trainer.train()
    return ema


def test_a_resumed_run_continues_the_same_average(tmp_path):
    full = _run(tmp_path / "full", 6)
    _run(tmp_path / "cut", 3)
    resumed = _run(tmp_path / "cut", 6, resume=True)
    assert resumed.updates == full.updates == 6
    for k, v in full.average.items():
        assert torch.equal(resumed.average[k], v), k


def test_a_checkpoint_of_another_model_is_refused():
    ema = ModelEMA(Net())
    with pytest.raises(ConfigError, match=r"lacks 2 entries.*linear\.bias"):
        ema.load_state_dict({"updates": 3, "average": {k: v for k, v in ema.average.items() if not k.startswith("linear")}})


@pytest.mark.slow
def test_a_job_with_the_ema_hook_evaluates_the_average(tmp_path):
    from tiny_job import first_test_images, tiny_job

    from framework.config.compose import compose
    from framework.engine.run import run

    job = [*tiny_job(4), *first_test_images(4), "+hook@hooks.ema=ModelEMA", "hooks.ema.decay=0.5"]
    metric = run(compose(job), output_dir=tmp_path / "train")
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metric == metrics["segm/AP"] and not math.isnan(metric)
    # model_best.pth holds the average: evaluating it alone gives the job's final metrics
    again = run(compose([*job, "eval_only=true", f"weights={tmp_path / 'train' / 'model_best.pth'}"]),
                output_dir=tmp_path / "eval")
    assert again == metric
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["bbox/AP"] == metrics["bbox/AP"]
