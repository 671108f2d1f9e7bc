"""End-to-end: the main job on a broken COCO-json dataset (polygons of 2 points, empty segmentations, a
NaN box, an unknown category, a truncated image, a missing one; in the training and the test json).

``bad_data=skip`` trains and evaluates: what loading dropped is counted in the log and TensorBoard,
the truncated image is replaced at training time and left out of the evaluation (counted as
``data/skipped_test_images``; the evaluation used to die on it after the last iteration), and
COCOeval gets the validated ground truth (it used to crash after training on such annotations). ``bad_data=strict`` stops before training,
with one message (exit code 2, no traceback) that lists every bad item.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.config.compose import compose
from framework.data.synthetic import generate_synthetic_coco
from framework.engine.run import run
from tiny_job import tiny_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

TINY = [
    *tiny_job(4, lr_step=3),
    "hooks.checkpointer.period=100",
    "hooks.visualizer.num_images=1",
    "hooks.writer.period=1",
]


def _break(json_file: Path, image_root: Path, *, truncate: bool) -> None:
    data = json.loads(json_file.read_text())
    anns = data["annotations"]
    anns[0]["segmentation"] = [[1, 1, 5, 5]]       # a polygon of 2 points
    anns[1]["segmentation"] = []                   # an empty segmentation
    anns[2]["bbox"][1] = float("nan")              # a NaN box
    anns[3]["category_id"] = 999                   # an unknown category
    data["images"].append({**data["images"][0], "id": 10_000, "file_name": "gone.png"})  # a missing file
    json_file.write_text(json.dumps(data))
    if truncate:  # an image that fails only when decoded
        victim = image_root / data["images"][1]["file_name"]
        victim.write_bytes(victim.read_bytes()[:300])


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("broken")
    train = generate_synthetic_coco(root, split="train", num_images=12, seed=1)
    val = generate_synthetic_coco(root, split="val", num_images=6, seed=1)
    _break(train, root / "train", truncate=True)
    _break(val, root / "val", truncate=True)
    return ["dataset=coco_json", f"dataset.train.json={train}", f"dataset.train.image_root={root / 'train'}",
            f"dataset.test.json={val}", f"dataset.test.image_root={root / 'val'}", "dataset.num_classes=4"]


def test_skip_trains_and_evaluates_counting_what_it_dropped(tmp_path, broken):
    metric = run(compose([*TINY, *broken]), output_dir=tmp_path)
    assert metric is not None
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and "segm/AP" in metrics and "bbox/AP" in metrics
    log = (tmp_path / "log.txt").read_text()
    for reason in ("annotation/bad_polygon=1", "annotation/empty_segmentation=1", "annotation/bad_bbox=1",
                   "annotation/unknown_category=1", "image/missing_file=1"):
        assert reason in log, reason
    scalars = {}
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        scalars.update(json.loads(line))
    assert scalars["data/dropped/annotation/bad_polygon"] == 1
    assert scalars["data/dropped/image/missing_file"] == 1
    # 4 steps of 4 images cover the first epoch (11 images): the truncated one was drawn and replaced.
    assert scalars["data/skipped_images"] >= 1
    assert "replaced an unreadable training image" in log and "000002.png" in log
    # The truncated val image: left out of the final evaluation, named, counted, in the metrics.
    left_out = [line for line in log.splitlines() if "left an unreadable test image out" in line]
    assert len(left_out) == 1 and str(Path("val") / "000002.png") in left_out[0], left_out
    assert "1 test image(s) could not be read" in log
    assert metrics["data/skipped_test_images"] == 1 and scalars["data/skipped_test_images"] == 1


def test_strict_stops_before_training_with_one_message(tmp_path, broken):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *TINY, *broken, "bad_data=strict",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert err.count("Error: ") == 1 and "instances_train.json" in err and "strict): 5 problem(s) found" in err
    for fragment in ("dropped 1 polygon(s)", "'segmentation' is an empty list", "'bbox' must be 4 finite numbers",
                     "unknown category id 999", "image file not found", "gone.png"):
        assert fragment in err, fragment
    assert not (tmp_path / "last_checkpoint").exists()
    assert "Starting training" not in (tmp_path / "log.txt").read_text()


def test_strict_finds_an_undecodable_image_before_training(tmp_path, broken):
    """The json itself fixed, only the truncated image left: strict decodes every image first."""
    train_json = Path(broken[1].split("=", 1)[1])
    root = train_json.parent.parent
    clean = generate_synthetic_coco(tmp_path / "clean", split="train", num_images=12, seed=1)
    overrides = [*broken[:1], f"dataset.train.json={clean}", f"dataset.train.image_root={root / 'train'}",
                 f"dataset.test.json={clean}", f"dataset.test.image_root={root / 'train'}", "dataset.num_classes=4"]
    with pytest.raises(Exception, match=r"bad_data=strict: 2 image\(s\) cannot be used \(nothing was trained\)") as info:
        run(compose([*TINY, *overrides, "bad_data=strict"]), output_dir=tmp_path / "run")
    message = str(info.value)  # the same file, in both splits
    assert "custom_train: image id=2: cannot read" in message and "custom_val: image id=2: cannot read" in message
    assert "000002.png" in message and "set bad_data=skip" in message
