"""End-to-end: the main job on 2 CPU processes, through torchrun and through ``dist.num_procs=2``.

Rank 0 alone writes the run directory (one log, one metrics stream, one set of TensorBoard files,
checkpoints without DDP's ``module.`` prefix), a resumed 2-process run continues where it
stopped, and a 2-process evaluation (each rank one shard, gathered on rank 0) gives the same
metrics as one process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.config.compose import compose
from framework.engine.run import run
from tiny_job import tiny_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = str(REPO / "tools" / "train_net.py")

TINY = [
    *tiny_job(6, lr_step=4),
    "hooks.checkpointer.period=3",
    "hooks.visualizer.num_images=2",
    "hooks.writer.period=2",
    "model.rpn.post_nms_topk_test=50",
]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _check_rank_0_only(out: Path, iterations: int) -> dict:
    log = (out / "log.txt").read_text()
    assert "Distributed run: 2 processes, this is rank 0" in log
    assert "this is rank 1" not in log
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line["iteration"] for line in lines if "total_loss" in line]
    assert len(steps) == len(set(steps)) and max(steps) == iterations - 1  # one writer: no duplicates
    pids = {re.match(r"events\.out\.tfevents\.\d+\.[^.]+\.(\d+)", p.name).group(1) for p in out.glob("events.out.*")}
    assert len(pids) == 1, pids  # all TensorBoard files from one process
    state = torch.load(out / "model_final.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
    return json.loads((out / "metrics.json").read_text())


def test_torchrun_trains_evaluates_and_resumes(tmp_path):
    out = tmp_path / "run"
    _run([*_torchrun(), TRAIN_NET, *TINY, f"hydra.run.dir={out}"], tmp_path)
    metrics = _check_rank_0_only(out, 6)
    assert metrics["iteration"] == 6 and "segm/AP" in metrics

    # Resume on 2 processes, longer: continues after the final checkpoint of iteration 5.
    _run([*_torchrun(), TRAIN_NET, *TINY, "train.max_iter=8", "resume=true", f"hydra.run.dir={out}"], tmp_path)
    assert "Starting training from iteration 6 to 8" in (out / "log.txt").read_text()
    assert json.loads((out / "metrics.json").read_text())["iteration"] == 8


def test_in_process_launcher_and_sharded_evaluation(tmp_path):
    out = tmp_path / "spawned"
    proc = _run([sys.executable, TRAIN_NET, *TINY, "dist.num_procs=2", f"hydra.run.dir={out}"], tmp_path)
    assert "Final: bbox AP" in proc.stdout
    _check_rank_0_only(out, 6)

    # The same weights evaluated by 2 processes (a shard each, gathered) and by 1.
    weights = out / "model_final.pth"
    _run([sys.executable, TRAIN_NET, *TINY, "dist.num_procs=2", "eval_only=true", f"weights={weights}",
          f"hydra.run.dir={tmp_path / 'eval2'}"], tmp_path)
    run(compose([*TINY, "eval_only=true", f"weights={weights}"]), output_dir=tmp_path / "eval1")
    two = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    one = json.loads((tmp_path / "eval1" / "metrics.json").read_text())
    assert two.keys() == one.keys()
    for key, value in one.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
