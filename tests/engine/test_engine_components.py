"""Optimizers, LR schedules, evaluators and loggers are registry components with config groups: a
plugin adds one of each and the main job selects them from the command line, like a model part."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framework.config.compose import compose
from framework.engine.run import run
from tiny_job import tiny_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

SHORT = [
    *tiny_job(4, warmup=2),
    "hooks.writer.period=1",
    "model.rpn.post_nms_topk_test=50",
]

PLUGIN = '''
"""A plugin adding one component to each engine registry."""
import csv
import os

import torch
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from framework.engine.lr_scheduler import WarmupSchedule
from framework.evaluation import DatasetEvaluator
from framework.registry import EVALUATORS, LOGGERS, LR_SCHEDULERS, OPTIMIZERS
from framework.utils.events import get_event_storage
from framework.utils.writers import EventWriter, new_scalars


@OPTIMIZERS.register()
def Adagrad(model, *, base_lr: float = 0.01, lr_decay: float = 0.0):
    return torch.optim.Adagrad([p for p in model.parameters() if p.requires_grad], lr=base_lr, lr_decay=lr_decay)


@LR_SCHEDULERS.register()
class WarmupPolyLR(WarmupSchedule):
    def __init__(self, max_iter: int, *, power: float = 0.9, **kwargs):
        super().__init__(max_iter, **kwargs)
        self.power = power

    def main_schedule(self):
        return PolynomialDecayParamScheduler(1.0, self.power)


@EVALUATORS.register()
class DetectionCount(DatasetEvaluator):
    """Mean number of detections per image above ``min_score``."""

    def __init__(self, dataset_name: str, *, min_score: float = 0.0):
        self.dataset_name = dataset_name
        self.min_score = min_score

    def reset(self):
        self.counts = []

    def process(self, inputs, outputs):
        self.counts += [int((o["instances"].scores >= self.min_score).sum()) for o in outputs]

    def evaluate(self):
        return {"count": {"dets_per_image": sum(self.counts) / max(len(self.counts), 1), "images": len(self.counts)}}


@LOGGERS.register()
class CSVWriter(EventWriter):
    def __init__(self, output_dir: str, *, filename: str = "scalars.csv"):
        self._file = open(os.path.join(output_dir, filename), "a", newline="")
        self._csv = csv.writer(self._file)
        self._written = {}

    def write(self):
        for itr, scalars in new_scalars(get_event_storage(), 1, self._written).items():
            for name, value in sorted(scalars.items()):
                self._csv.writerow([itr, name, value])
        self._file.flush()

    def close(self):
        self._file.close()
'''


def test_a_plugin_adds_an_optimizer_schedule_evaluator_and_logger(tmp_path):
    projects = tmp_path / "projects"
    (projects / "engine_parts").mkdir(parents=True)
    (projects / "engine_parts" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    out = tmp_path / "run"
    env = {**os.environ, "FRAMEWORK_PROJECTS": str(projects), "PYTHONWARNINGS": "ignore"}
    args = [*(a for a in SHORT if not a.startswith("lr_scheduler.steps")), "solver=Adagrad", "solver.base_lr=0.05", "lr_scheduler=WarmupPolyLR", "lr_scheduler.power=2.0",
            "+evaluator@evaluators.count=DetectionCount", "+logger@loggers.csv=CSVWriter", f"hydra.run.dir={out}"]
    res = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count/images"] == 50  # every synthetic_val image went through both evaluators
    assert metrics["count/dets_per_image"] >= 0 and "segm/AP" in metrics and "bbox/AP" in metrics

    # lr of iteration i: 0.05 * (linear warm-up over 2 of 4 iterations from 0.001 to poly(0.5), then (1 - i/4)^2)
    poly = lambda w: (1 - w) ** 2.0  # noqa: E731
    expected = [0.05 * (0.001 * poly(0) + (poly(0.5) - 0.001 * poly(0)) * (i / 4) / 0.5) for i in (0, 1)]
    expected += [0.05 * poly(i / 4) for i in (2, 3)]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [line["lr"] for line in lines if "lr" in line]
    assert lrs == pytest.approx(expected)

    rows = list(csv.reader((out / "scalars.csv").open()))
    assert {r[1] for r in rows} >= {"total_loss", "lr", "count/dets_per_image"}

    import torch

    state = torch.load(out / "model_final.pth", weights_only=False)["optimizer"]
    assert "sum" in next(iter(state["state"].values()))  # Adagrad's accumulator: the plugin optimizer ran


def test_wandb_offline_and_mlflow_local_store_record_the_run(tmp_path):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cfg = compose([*SHORT, "train.max_iter=2", "+logger@loggers.wandb=WandbWriter",
                   "+logger@loggers.mlflow=MLflowWriter", "loggers.mlflow.experiment_name=test"])
    run(cfg, output_dir=tmp_path)

    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), "no offline wandb run recorded"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [mlrun] = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["solver.name"] == "AdamW" and mlrun.data.params["train.max_iter"] == "2"
    history = client.get_metric_history(mlrun.info.run_id, "total_loss")
    assert [m.step for m in history] == [0, 1]
    final = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isclose(client.get_metric_history(mlrun.info.run_id, "bbox/AP")[-1].value, final["bbox/AP"])


def test_a_tracker_that_is_not_installed_names_the_extra(monkeypatch, tmp_path):
    import builtins

    from framework.errors import ConfigError
    from framework.utils.trackers import WandbWriter

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'framework\[wandb\]'"):
        WandbWriter(str(tmp_path))
