"""End-to-end, from the command line: one corrupt image (not an image, a PNG truncated to half, or
another size than its json says) in a COCO set used for both training and validation.

``bad_data=skip`` (the default) trains, replacing it, then evaluates without it: exit code 0, a
final AP, the file named in the log, and the counts in the metrics. ``bad_data=strict`` stops before
training with one message naming the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_images import BAD_IMAGES
from tiny_job import tiny_job

from framework.data.synthetic import generate_synthetic_coco

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _set_with_one_bad_image(root: Path, kind: str) -> tuple[list[str], str]:
    """Overrides training and evaluating on the same 8-image set whose second image is broken as
    ``kind`` says; and that image's file name."""
    json_file = generate_synthetic_coco(root, split="train", num_images=8, seed=3)
    victim = json.loads(json_file.read_text())["images"][1]
    BAD_IMAGES[kind].write(root / "train" / victim["file_name"], victim["width"], victim["height"])
    split = {"json": json_file, "image_root": root / "train"}
    return ["dataset=coco_json", "dataset.num_classes=4",
            *(f"dataset.{s}.{k}={v}" for s in ("train", "test") for k, v in split.items())], victim["file_name"]


def _train_net(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *tiny_job(3), *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_skip_trains_and_evaluates_without_it(kind, tmp_path):
    data, victim = _set_with_one_bad_image(tmp_path / "data", kind)
    run_dir = tmp_path / "run"
    proc = _train_net([*data, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 3 and metrics["segm/AP"] == metrics["segm/AP"]  # a final AP, not NaN
    assert metrics["data/skipped_test_images"] == 1
    scalars: dict = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        scalars.update(json.loads(line))
    assert scalars["data/skipped_images"] >= 1  # 3 steps of 4 images cover the 8: it was drawn and replaced
    log = (run_dir / "log.txt").read_text()
    replaced = [line for line in log.splitlines() if "replaced an unreadable training image" in line]
    left_out = [line for line in log.splitlines() if "left an unreadable test image out" in line]
    assert replaced and all(victim in line for line in replaced)
    assert len(left_out) == 1 and victim in left_out[0]
    assert "Final: bbox AP = " in proc.stdout


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_strict_stops_before_training_naming_it(kind, tmp_path):
    data, victim = _set_with_one_bad_image(tmp_path / "data", kind)
    run_dir = tmp_path / "run"
    proc = _train_net([*data, "bad_data=strict", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert [line.startswith("Error: ") for line in proc.stderr.splitlines()].count(True) == 1  # one message
    assert "nothing was trained" in proc.stderr
    assert "custom_train: image id=2: " in proc.stderr and "custom_val: image id=2: " in proc.stderr
    reason = {"not an image": "cannot identify image file", "PNG truncated to half": "Truncated File Read",
              "another size than the json": "but the dataset says"}[kind]
    named = [line for line in proc.stderr.splitlines() if victim in line]
    assert len(named) == 2 and all(reason in line for line in named)  # the training and the test split
    assert not (run_dir / "last_checkpoint").exists()
    assert "Starting training" not in (run_dir / "log.txt").read_text()


def test_eval_only_leaves_it_out_too(tmp_path):
    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_model, resolve_device
    from framework.engine.run import run

    data, victim = _set_with_one_bad_image(tmp_path / "data", "PNG truncated to half")
    overrides = [*tiny_job(1), *data]
    Checkpointer(build_model(compose(overrides), resolve_device("cpu")), str(tmp_path)).save("w")
    metric = run(compose([*overrides, "eval_only=true", f"weights={tmp_path / 'w.pth'}"]), output_dir=tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metric == metrics["segm/AP"] and metrics["data/skipped_test_images"] == 1
    assert victim in (tmp_path / "eval" / "log.txt").read_text()
