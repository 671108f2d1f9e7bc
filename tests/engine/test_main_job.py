"""End-to-end: the main job (train + evaluate + TensorBoard), multirun, sweeps, real COCO images.

Marked ``slow`` (a few minutes together on 2 CPU cores); ``pytest -m "not slow"`` skips them and
CI runs them. Models and images are shrunk with overrides: the code path is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.config.compose import compose
from framework.engine.run import run
from tiny_job import tiny_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

#: A tiny but complete job: few iterations, small images. (Resume after a kill: test_kill_and_resume.py.)
TINY = [
    *tiny_job(6, lr_step=4),
    "hooks.checkpointer.period=3",
    "hooks.visualizer.num_images=2",
    "hooks.writer.period=2",
    "model.rpn.post_nms_topk_test=50",
]


def _tensorboard_tags(run_dir: Path) -> dict[str, set]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set] = {"scalars": set(), "images": set(), "tensors": set(), "hparams": set(), "pr_curves": set()}
    for f in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        acc.Reload()
        for kind in ("scalars", "images", "tensors"):
            tags[kind] |= set(acc.Tags().get(kind, []))
        for plugin in ("hparams", "pr_curves"):
            try:
                tags[plugin] |= set(acc.PluginTagToContent(plugin))
            except KeyError:  # this events file holds none
                pass
    return tags


def test_main_job_trains_evaluates_and_logs(tmp_path):
    cfg = compose(TINY + ["evaluators.coco.gallery_size=2"])
    metric = run(cfg, output_dir=tmp_path)

    for name in ("config.yaml", "log.txt", "metrics.json", "metrics.jsonl", "model_final.pth",
                 "last_checkpoint", "inference/coco_instances_results.json", "inference/errors.json",
                 "inference/errors.md", "inference/errors.png", "inference/pr_curves_bbox.png",
                 "inference/pr_curves_segm.png"):
        assert (tmp_path / name).exists(), name
    assert len(list((tmp_path / "inference" / "failures").glob("0[12]_image*.png"))) == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 6
    assert {"bbox/AP", "segm/AP", "bbox/AP50", "segm/APs"} <= set(metrics)
    assert metric == pytest.approx(metrics["segm/AP"])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_mask" in line and "lr" in line for line in lines)

    tags = _tensorboard_tags(tmp_path)
    for scalar in ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc",
                   "lr", "time", "data_time", "bbox/AP", "segm/AP"):
        assert scalar in tags["scalars"], scalar
    assert len([t for t in tags["images"] if t.startswith("vis/")]) == 2
    assert any(t.startswith("config") for t in tags["tensors"])
    # The evaluator's analysis: TIDE dAP scalars, a PR curve per task and class, the gallery of failures.
    for task in ("bbox", "segm"):
        assert {f"{task}/dAP-{t}" for t in ("cls", "loc", "both", "dupe", "bkg", "miss", "FP", "FN")} <= tags["scalars"]
        assert {f"pr_{task}/{name}" for name in ("disk", "square", "triangle", "cross")} <= tags["pr_curves"]
    assert {"failures/01", "failures/02"} <= tags["images"]

    # eval_only with the final checkpoint reproduces the final evaluation of training exactly
    eval_dir = tmp_path / "eval"
    run(compose(TINY + ["evaluators.coco.gallery_size=2", "eval_only=true", f"weights={tmp_path / 'model_final.pth'}"]),
        output_dir=eval_dir)
    again = json.loads((eval_dir / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if "/" in k} == pytest.approx(
        {k: v for k, v in metrics.items() if "/" in k}, nan_ok=True
    )


def test_eval_only_without_weights_says_what_is_missing(tmp_path):
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_only=true needs weights="):
        run(compose(TINY + ["eval_only=true"]), output_dir=tmp_path)


def _train_net(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_multirun_gives_one_complete_run_directory_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    res = _train_net(["-m", *TINY, "train.max_iter=2", "lr_scheduler.steps=[]",
                      "solver.base_lr=0.01,0.02", "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and (p / "config.yaml").exists()), key=lambda p: int(p.name))
    assert len(jobs) == 4
    for job, (lr, seed) in zip(jobs, [("0.01", 1), ("0.01", 2), ("0.02", 1), ("0.02", 2)]):
        assert f"solver.base_lr={lr}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert f"seed={seed}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert json.loads((job / "metrics.json").read_text())["iteration"] == 2
        assert (job / "model_final.pth").exists()
        tags = _tensorboard_tags(job)
        assert "bbox/AP" in tags["scalars"]
        # the HParams tab: this job's swept value against its final metrics
        assert "_hparams_/session_start_info" in tags["hparams"]
    assert "Final: bbox AP" in res.stdout
    # The sweep root pools the seeds as tools/compare_runs.py does: two groups of two jobs.
    summary = (sweep / "summary.md").read_text()
    assert "## Seeds pooled (as tools/compare_runs.py)" in summary
    assert "| A | 2 | 1, 2 |" in summary and "| B | 2 | 1, 2 |" in summary and "solver.base_lr=0.02" in summary
    assert (sweep / "comparison.png").is_file()


def test_command_line_typo_fails_before_any_job(tmp_path):
    res = _train_net(["-m", "solver.base_lr=0.01,0.02", "model/roi_pooler=ROIAlign,ROIAlgnV2"], tmp_path)
    assert res.returncode == 2
    assert "Did you mean 'ROIAlignV2'" in res.stderr
    assert not (tmp_path / "multirun").exists()


def test_coco_tiny_trains_and_evaluates_like_cocoeval(tmp_path, coco_tiny):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cfg = compose(TINY + [
        "dataset=coco_json",
        f"dataset.train.json={coco_tiny / 'annotations' / 'instances_train2017.json'}",
        f"dataset.train.image_root={coco_tiny / 'train2017'}",
        f"dataset.test.json={coco_tiny / 'annotations' / 'instances_val2017.json'}",
        f"dataset.test.image_root={coco_tiny / 'val2017'}",
        "dataset.num_classes=80",
        "train.max_iter=3",
        "lr_scheduler.steps=[]",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",  # an untrained model still gives detections to score
    ])
    run(cfg, output_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    results = tmp_path / "inference" / "coco_instances_results.json"
    coco_gt = COCO(str(coco_tiny / "annotations" / "instances_val2017.json"))
    coco_gt.dataset.setdefault("info", {})  # loadRes copies it; the shared json has none
    predictions = json.loads(results.read_text())
    assert predictions, "the run dumped no predictions"
    for task in ("bbox", "segm"):
        # For masks, area comes from the mask, not the box (drop "bbox"; detectron2's protocol too).
        dts = [{k: v for k, v in p.items() if not (task == "segm" and k == "bbox")} for p in predictions]
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dts), task)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        for i, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
            direct = coco_eval.stats[i] * 100 if coco_eval.stats[i] >= 0 else float("nan")
            assert metrics[f"{task}/{key}"] == pytest.approx(direct, abs=1e-9, nan_ok=True), (task, key)


def test_a_bad_weights_file_is_one_message_and_exit_code_2(tmp_path):
    bad = tmp_path / "model_final.pth"
    bad.write_bytes(b"not a checkpoint")
    res = _train_net([*TINY, "eval_only=true", f"weights={bad}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert res.returncode == 2
    assert f"Error: {bad}: not a readable checkpoint" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_sweep_writes_a_summary_with_a_row_per_job_even_a_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    missing = tmp_path / "missing.pth"
    res = _train_net(["-m", *TINY, "train.max_iter=2", "lr_scheduler.steps=[]",
                      f"weights=null,{missing}", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode != 0  # Hydra reports the failed job after running the others
    jobs = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in jobs] == ["completed", "failed"]
    assert jobs[0]["metrics"]["bbox/AP"] >= 0 and jobs[0]["seconds"] > 0
    assert "weights=null" in jobs[0]["overrides"]
    assert "CheckpointNotFoundError" in jobs[1]["error"] and str(missing) in jobs[1]["error"]
    table = (sweep / "summary.md").read_text()
    assert "| 0 | completed | weights=null |" in table and "| 1 | failed: CheckpointNotFoundError" in table
    assert "Every job: `" in table and "lr_scheduler.steps=[]" in table.split("\n\n")[1] and "bbox/AP" in table
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("job,status,error,overrides,seconds,bbox/AP")


def test_an_optuna_search_runs_its_trials_and_keeps_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    import yaml

    sweep = tmp_path / "search"
    res = _train_net(["-m", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", *TINY, "train.max_iter=2",
                      "lr_scheduler.steps=[]", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"solver.base_lr", "solver.weight_decay"}
    assert 0.0002 <= best["best_params"]["solver.base_lr"] <= 0.005
    jobs = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    # each trial trained with the values Optuna drew, and returned its metric to Optuna
    for job in jobs:
        drawn = dict(o.split("=", 1) for o in job["overrides"] if o.startswith("solver."))
        config = yaml.safe_load((sweep / job["folder"] / "config.yaml").read_text())
        assert config["solver"]["base_lr"] == pytest.approx(float(drawn["solver.base_lr"]))
    assert best["best_value"] == max(j["metrics"]["segm/AP"] for j in jobs)
