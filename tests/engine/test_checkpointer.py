"""Checkpointer: atomic saves, the last_checkpoint pointer, keep-last-N, load reports and formats."""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from framework.checkpoint import Checkpointer, IncompatibleCheckpointError, UnsafePickleError


class Net(nn.Module):
    def __init__(self, out: int = 1, extra: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(2, out)
        if extra:
            self.extra = nn.Linear(1, 1)


class Stateful:
    def __init__(self, value) -> None:
        self.value = value

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def _set(model: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_save_writes_file_and_pointer_without_temp_files(tmp_path):
    ckpt = Checkpointer(_set(Net(), 2.0), str(tmp_path), extra=Stateful(7))
    path = ckpt.save("model_0000004", iteration=4)
    assert path == os.path.join(str(tmp_path), "model_0000004.pth")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    data = torch.load(path, weights_only=True)
    assert data["iteration"] == 4 and data["extra"] == {"value": 7}
    assert torch.equal(data["model"]["linear.weight"], torch.full((1, 2), 2.0))
    assert ckpt.has_checkpoint() and ckpt.get_checkpoint_file() == path


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path):
    state = Stateful(1)
    ckpt = Checkpointer(Net(), str(tmp_path), extra=state)
    ckpt.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()
    state.value = lambda: None  # not picklable: torch.save fails half-way
    with pytest.raises(Exception):
        ckpt.save("model_final")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    assert (tmp_path / "model_final.pth").read_bytes() == before


def test_tag_last_false_keeps_pointer(tmp_path):
    ckpt = Checkpointer(Net(), str(tmp_path))
    ckpt.save("model_0000001")
    ckpt.save("model_best", tag_last=False)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_prune_keeps_newest_n_periodic_only(tmp_path):
    ckpt = Checkpointer(Net(), str(tmp_path))
    for it in (1, 3, 5, 7, 9):
        ckpt.save(f"model_{it:07d}")
    ckpt.save("model_final")
    ckpt.save("model_best", tag_last=False)
    ckpt.save("other_0000002")  # another prefix: untouched
    removed = ckpt.prune("model", keep=2)
    assert sorted(os.path.basename(p) for p in removed) == ["model_0000001.pth", "model_0000003.pth", "model_0000005.pth"]
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000007.pth",
        "model_0000009.pth",
        "model_best.pth",
        "model_final.pth",
        "other_0000002.pth",
    ]
    assert [it for it, _ in ckpt.periodic_checkpoints("model")] == [7, 9]


def test_prune_never_removes_the_pointed_file(tmp_path):
    ckpt = Checkpointer(Net(), str(tmp_path))
    ckpt.save("model_0000009")
    ckpt.save("model_0000001")  # pointer -> the older one (e.g. written by hand)
    ckpt.prune("model", keep=1)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth", "model_0000009.pth"]


def test_save_to_disk_false_writes_nothing(tmp_path):
    ckpt = Checkpointer(Net(), str(tmp_path), save_to_disk=False)
    assert ckpt.save("model_final") is None
    assert os.listdir(tmp_path) == []


def test_load_round_trip_with_checkpointables(tmp_path):
    src = Checkpointer(_set(Net(), 3.0), str(tmp_path), extra=Stateful(5))
    src.save("model_0000002", iteration=2)
    state = Stateful(0)
    dst = Checkpointer(_set(Net(), 0.0), str(tmp_path), extra=state)
    rest = dst.load(dst.get_checkpoint_file())
    assert rest == {"iteration": 2}
    assert state.value == 5
    assert torch.equal(dst.model.linear.weight, torch.full((1, 2), 3.0))
    # checkpointables=[]: only the weights
    state.value = 0
    dst.load(str(tmp_path / "model_0000002.pth"), checkpointables=[])
    assert state.value == 0


def test_load_reports_missing_unexpected_and_shape(tmp_path, caplog):
    Checkpointer(Net(out=1, extra=True), str(tmp_path)).save("a")
    target = Net(out=3)  # no `extra`; linear has another output size
    with pytest.raises(IncompatibleCheckpointError, match="weights_skip_mismatch=true"):
        Checkpointer(target, str(tmp_path)).load(str(tmp_path / "a.pth"))
    ckpt = Checkpointer(target, str(tmp_path), skip_mismatch=True)
    with caplog.at_level(logging.WARNING, logger="framework.checkpoint.checkpointer"):
        ckpt.load(str(tmp_path / "a.pth"))
    text = caplog.text
    assert "2 checkpoint keys not in the model (ignored)" in text and "extra.{bias, weight}" in text
    assert "linear.weight: (1, 2) in the checkpoint, (3, 2) in the model" in text
    assert "model keys not in the checkpoint" not in text  # the wrong-shape keys are listed once
    report = ckpt.last_report
    assert sorted(report.unexpected) == ["extra.bias", "extra.weight"]
    assert report.missing == () and [k for k, _, _ in report.wrong_shape] == ["linear.weight", "linear.bias"]
    assert report.conflicts == ()  # `extra` is a part the model does not have
    with pytest.raises(IncompatibleCheckpointError, match="extra"):
        ckpt.load(str(tmp_path / "a.pth"), strict=True)


def test_resume_checkpoint_entries_other_than_the_model_are_untouched(tmp_path):
    Checkpointer(_set(Net(), 1.0), str(tmp_path), extra=Stateful({"pixel_mean": 3})).save("m", iteration=1)
    state = Stateful(None)
    ckpt = Checkpointer(Net(), str(tmp_path), extra=state)
    assert ckpt.load(str(tmp_path / "m.pth")) == {"iteration": 1}
    assert state.value == {"pixel_mean": 3}
    assert ckpt.last_report.loaded == 2 and ckpt.last_report.source == "detectron2 names (this framework's)"


def test_load_strips_module_prefix_and_bare_state_dict(tmp_path):
    src = _set(Net(), 4.0)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "bare.pth")
    dst = Checkpointer(_set(Net(), 0.0))
    dst.load(str(tmp_path / "bare.pth"))
    assert torch.equal(dst.model.linear.bias, torch.tensor([4.0]))
    assert dst.last_report.missing == () and dst.last_report.loaded == 2


def test_load_detectron2_pkl(tmp_path):
    weights = {"linear.weight": np.array([[1.0, 2.0]], dtype=np.float32), "linear.bias": np.array([0.5], dtype=np.float32)}
    with open(tmp_path / "model_final_abc.pkl", "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)
    ckpt = Checkpointer(Net())
    rest = ckpt.load(str(tmp_path / "model_final_abc.pkl"))
    assert rest == {"__author__": "Detectron2 Model Zoo"}
    assert torch.equal(ckpt.model.linear.weight, torch.tensor([[1.0, 2.0]]))
    assert ckpt.model.linear.bias.item() == 0.5


class Arbitrary:
    pass


def test_load_refuses_arbitrary_objects(tmp_path):
    torch.save({"model": Net().state_dict(), "obj": Arbitrary()}, tmp_path / "x.pth")
    with pytest.raises(UnsafePickleError, match=r"x.pth: refusing to load the global \S*Arbitrary,"):
        Checkpointer(Net()).load(str(tmp_path / "x.pth"))


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Checkpointer(Net(), str(tmp_path)).load(str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("content", [b"", b"not a pickle", "truncated"])
def test_a_corrupt_file_is_named_as_unreadable(tmp_path, content):
    from framework.checkpoint import CheckpointReadError, load_checkpoint_file

    path = tmp_path / "model.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.ones(64)}}, path)
        content = path.read_bytes()[:100]
    path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match=f"{path}: not a readable checkpoint"):
        load_checkpoint_file(str(path))
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(content[:50])
    with pytest.raises(CheckpointReadError, match=f"{pkl}: not a readable .pkl"):
        load_checkpoint_file(str(pkl))
