"""SLURM through hydra-submitit-launcher, on one machine with submitit's local executor: a 2-task job
(one process group of 2 CPU processes) is preempted (SIGUSR2, as SLURM signals it), requeued by
submitit's checkpointing protocol, resumes from its last checkpoint and ends with the weights of an
uninterrupted job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_job import tiny_job

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the slurm extra (hydra-submitit-launcher)")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

JOB = [
    *tiny_job(20, lr_step=14),
    "hooks.checkpointer.period=5",
    "hydra/launcher=slurm_local",
    "hydra.launcher.tasks_per_node=2",
]


def _start(sweep_dir: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "train_net.py"), "-m", *JOB,
                             f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-5000:]
    return out


def _task_pids(sweep_dir: Path) -> list[int]:
    """The job's task processes (``python -m submitit.core._submit <sweep>/.submitit/<job id>``)."""
    found = subprocess.run(["pgrep", "-f", f"submitit.core._submit {sweep_dir}"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def test_preempted_job_is_requeued_and_resumes_to_the_same_weights(tmp_path):
    preempted, reference = tmp_path / "preempted", tmp_path / "reference"
    proc = _start(preempted, tmp_path)
    deadline = time.time() + 300
    while not (preempted / "0" / "model_0000009.pth").exists():
        assert proc.poll() is None and time.time() < deadline, "the job ended or stalled before its 2nd checkpoint"
        time.sleep(0.2)
    pids = _task_pids(preempted)
    assert len(pids) == 2, pids
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends before preempting or timing out a job
    _finish(proc)

    log = (preempted / "0" / "log.txt").read_text()
    assert "Distributed run: 2 processes" in log
    assert "resuming from" in log and "Starting training from iteration 0 to 20" in log
    resumed_at = [line for line in log.splitlines() if "Starting training from iteration" in line]
    assert len(resumed_at) == 2 and "iteration 0 " not in resumed_at[1], resumed_at

    _finish(_start(reference, tmp_path))
    a = torch.load(reference / "0" / "model_final.pth", weights_only=True)
    b = torch.load(preempted / "0" / "model_final.pth", weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 19
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
