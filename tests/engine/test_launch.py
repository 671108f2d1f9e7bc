"""Processes and DDP: the in-process launcher (spawn, gloo on CPU), torchrun's environment, and a
2-process training step that equals one process on the whole batch."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from framework.data.build import build_train_loader
from framework.engine import Hook, Trainer
from framework.engine.ddp import create_ddp_model
from framework.engine.launch import distributed_env, launch
from framework.errors import ConfigError
from framework.utils import comm


# --------------------------------------------------------------- launched functions (module level: spawn imports them)
def _who_am_i(tag: str) -> tuple:
    ranks = comm.all_gather(comm.get_rank())
    return tag, comm.get_rank(), comm.get_world_size(), os.environ.get("LOCAL_RANK"), ranks


def _fail_on_rank_1() -> None:
    if comm.get_rank() == 1:
        raise ValueError("rank 1 found a corrupt file")
    comm.synchronize()


class Toy(nn.Module):
    """Least squares on per-image dicts: the loss is a mean over the images of the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        return {"loss_mse": (self.linear(x) - y).pow(2).mean()}


def _toy_mapper(d: dict) -> dict:
    g = torch.Generator().manual_seed(d["image_id"])
    x = torch.randn(3, generator=g)
    return {"x": x, "y": x.sum(0, keepdim=True) * 0.5 + torch.rand(1), "width": d["width"], "height": d["height"]}


class _GradCapture(Hook):
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def after_backward(self, loop) -> None:
        self.grads = [p.grad.detach().clone() for p in self.model.parameters()]


def _one_step(total_batch_size: int) -> dict:
    """One training step of the toy model through the framework's loader, DDP wrapper and trainer."""
    torch.manual_seed(0)
    model = Toy()
    # Mixed orientations, so aspect-ratio grouping has work to do.
    dicts = [{"file_name": f"{i}.jpg", "image_id": i, "width": 4 if i % 3 else 2, "height": 3} for i in range(16)]
    loader = build_train_loader(dicts, _toy_mapper, total_batch_size=total_batch_size, num_workers=0, seed=5,
                                aspect_ratio_grouping=False)
    capture = _GradCapture(model)
    trainer = Trainer(model=create_ddp_model(model), data_loader=loader, max_iter=1, hooks=[capture], seed=1,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train()
    return {"grads": capture.grads, "weights": [p.detach().clone() for p in model.parameters()],
            "wrapped": type(trainer.model).__name__, "loss": trainer.storage.history("loss_mse").latest()}


def _ema_steps(total_batch_size: int) -> dict:
    """Four steps of the toy model with a ModelEMA hook, through the loader, DDP wrapper and trainer."""
    from framework.engine import ModelEMA

    torch.manual_seed(0)
    model = Toy()
    dicts = [{"file_name": f"{i}.jpg", "image_id": i, "width": 4, "height": 3} for i in range(16)]
    loader = build_train_loader(dicts, _toy_mapper, total_batch_size=total_batch_size, num_workers=0, seed=5,
                                aspect_ratio_grouping=False)
    ema = ModelEMA(model, decay=0.5)
    Trainer(model=create_ddp_model(model), data_loader=loader, max_iter=4, hooks=[ema], seed=1,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1)).train()
    return {"average": comm.all_gather({k: v.clone() for k, v in ema.average.items()})}


# --------------------------------------------------------------- tests
def test_one_process_calls_directly():
    assert launch(_who_am_i, ("x",))[:3] == ("x", 0, 1)


def test_spawned_ranks_join_one_group_and_rank_0_returns():
    tag, rank, world, local_rank, ranks = launch(_who_am_i, ("hello",), "cpu", num_procs=2)
    assert (tag, rank, world, local_rank, ranks) == ("hello", 0, 2, "0", [0, 1])
    assert not torch.distributed.is_initialized()  # the group is torn down afterwards
    assert launch(_who_am_i, ("again",), "cpu", num_procs=2)[-1] == [0, 1]  # and can be started again


def test_a_failing_spawned_rank_is_what_gets_reported():
    with pytest.raises(Exception, match="rank 1 found a corrupt file"):
        launch(_fail_on_rank_1, (), "cpu", num_procs=2, timeout_s=60)


def _bad_input_everywhere() -> None:
    from framework.data.coco import DatasetError

    raise DatasetError(f"rank {comm.get_rank()}: ann.json: image id=3: image file not found")


def test_bad_input_on_every_rank_stays_the_one_message():
    from framework.data.coco import DatasetError

    with pytest.raises(DatasetError, match="rank 0: ann.json"):  # rank 0's, still an InputError for the CLI
        launch(_bad_input_everywhere, (), "cpu", num_procs=2, timeout_s=60)


def test_torchrun_environment_is_detected_and_num_procs_must_stay_1(monkeypatch):
    assert distributed_env() is None
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999",
           "TORCHELASTIC_RUN_ID": "x"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed_env().source == "torchrun"
    with pytest.raises(ConfigError, match=r"dist\.num_procs.*one of 2 started by torchrun"):
        launch(_who_am_i, ("x",), "cpu", num_procs=2)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"dist\.num_procs"):
        launch(_who_am_i, ("x",), "cpu", num_procs=0)
    with pytest.raises(ConfigError, match=r"dist\.backend.*nccl needs CUDA"):
        launch(_who_am_i, ("x",), "cpu", num_procs=2, backend="nccl")


def test_two_processes_step_like_one_process_on_the_whole_batch():
    """The 2-process gradients at step 1 are the 1-process gradients of the concatenated batch."""
    single = _one_step(4)
    double = launch(_one_step, (4,), "cpu", num_procs=2)
    assert single["wrapped"] == "Toy" and double["wrapped"] == "DistributedDataParallel"
    for g1, g2 in zip(single["grads"], double["grads"]):
        torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
    for w1, w2 in zip(single["weights"], double["weights"]):
        torch.testing.assert_close(w2, w1, rtol=1e-5, atol=1e-6)
    assert double["loss"] == pytest.approx(single["loss"], rel=1e-5)  # the logged loss is the mean over ranks


def test_sync_bn_on_cpu_is_refused_with_the_key():
    # Not distributed: nothing to wrap, nothing to check.
    assert isinstance(create_ddp_model(nn.BatchNorm2d(3), sync_bn=True), nn.BatchNorm2d)
    with pytest.raises(Exception, match=r"ddp\.sync_bn.*needs CUDA"):
        launch(_sync_bn_cpu, (), "cpu", num_procs=2, timeout_s=60)


class _NaNOnRank1(Toy):
    """The toy model, whose loss is NaN on rank 1 at its second forward."""

    calls = 0

    def forward(self, batch):
        losses = super().forward(batch)
        self.calls += 1
        if comm.get_rank() == 1 and self.calls == 2:
            losses["loss_mse"] = losses["loss_mse"] * float("nan")
        return losses


def _skip_a_step() -> dict:
    torch.manual_seed(0)
    model = _NaNOnRank1()
    dicts = [{"file_name": f"{i}.jpg", "image_id": i, "width": 4, "height": 3} for i in range(8)]
    loader = build_train_loader(dicts, _toy_mapper, total_batch_size=4, num_workers=0, seed=5)
    trainer = Trainer(model=create_ddp_model(model), data_loader=loader, max_iter=4, seed=1, max_nonfinite_steps=1,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train()
    return {"skipped": trainer.nonfinite_steps, "weights": comm.all_gather([p.detach() for p in model.parameters()])}


def test_a_non_finite_step_on_one_rank_is_skipped_on_all():
    out = launch(_skip_a_step, (), "cpu", num_procs=2, timeout_s=60)
    assert out["skipped"] == 1  # the check uses the mean over ranks: both skipped step 1, neither hung
    for w0, w1 in zip(*out["weights"]):
        assert torch.equal(w0, w1)


def _sync_bn_cpu() -> None:
    create_ddp_model(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), sync_bn=True)


def test_ema_under_ddp_is_the_one_process_average_on_every_rank():
    single = _ema_steps(4)["average"][0]
    per_rank = launch(_ema_steps, (4,), "cpu", num_procs=2, timeout_s=60)["average"]
    for rank_average in per_rank:
        for k, v in single.items():
            torch.testing.assert_close(rank_average[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert all(torch.equal(per_rank[0][k], per_rank[1][k]) for k in single)  # bit-equal across ranks
