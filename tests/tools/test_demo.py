"""tools/demo.py: one drawn PNG per readable image, COCO-format json, one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from bad_images import BAD_IMAGES
from framework.data.synthetic import synthetic_cache_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def images(tmp_path, synthetic_cache) -> Path:
    """Two synthetic val images, two unreadable ones (not an image; a PNG cut to half its bytes) and a
    text file (not an image extension: not an input)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted((synthetic_cache_dir(synthetic_cache) / "val").glob("*.png"))[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    BAD_IMAGES["PNG truncated to half"].write(folder / "half.png", 64, 48)
    (folder / "notes.txt").write_text("not an image: ignored")
    return folder


def test_demo_on_a_folder(tmp_path, images, run_dir):
    out = tmp_path / "out"
    # Only weights= is given: it lies in a run directory, so the run's config builds the model.
    cmd = [sys.executable, str(REPO / "tools" / "demo.py"), "--input", str(images), "--output", str(out), "--json",
           "--score-thresh", "0", "--device", "cpu", f"weights={run_dir / 'model_final.pth'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)  # env: FRAMEWORK_CACHE set
    assert proc.returncode == 0, proc.stderr
    assert "Using the config of run" in proc.stderr
    assert "Wrote 2 image(s)" in proc.stdout and "skipped 2 unreadable" in proc.stdout
    assert "broken.jpg" in proc.stdout and "half.png" in proc.stdout
    # One warning per unreadable file, naming it, and the run goes on to the next.
    warnings = [line for line in proc.stderr.splitlines() if "skipped: cannot read image" in line]
    assert len(warnings) == 2 and "broken.jpg" in warnings[0] and "half.png" in warnings[1], proc.stderr
    assert "image file is truncated" in warnings[1]

    assert sorted(p.name for p in out.glob("*.png")) == ["000001.png", "000002.png"]
    for name in ("000001.png", "000002.png"):
        assert Image.open(out / name).size == Image.open(images / name).size

    results = json.loads((out / "coco_instances_results.json").read_text())
    from framework.engine.predictor import Predictor

    predictor = Predictor.from_run(run_dir, device="cpu")
    for image_id in (1, 2):
        mine = [r for r in results if r["image_id"] == image_id]
        expected = predictor(images / f"{image_id:06d}.png")
        assert len(mine) == len(expected) > 0
        ids = [predictor.metadata.contiguous_id_to_dataset_id[k] for k in expected.pred_classes.tolist()]
        assert [r["category_id"] for r in mine] == ids and set(ids) <= {2, 5, 9, 12}  # the dataset's own ids
        xyxy = expected.pred_boxes.tensor.numpy()
        np.testing.assert_allclose([r["bbox"] for r in mine], np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], atol=1e-3)
        np.testing.assert_allclose([r["score"] for r in mine], expected.scores.numpy(), atol=1e-5)
        rle = mine[0]["segmentation"]
        assert isinstance(rle["counts"], str) and rle["size"] == list(expected.image_size)
        assert mask_util.decode({**rle, "counts": rle["counts"].encode()}).shape == expected.image_size


def test_no_image_matched(demo, tmp_path, capsys):
    assert demo.main(["--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"), "weights=w.pth"]) == 2
    err = capsys.readouterr().err
    assert "error: no images matched --input" in err and "Traceback" not in err


def test_model_errors(demo, images, run_dir, tmp_path, capsys):
    base = ["--input", str(images), "--output", str(tmp_path / "out"), "--device", "cpu"]
    assert demo.main(base) == 2
    assert "give the model: weights=<checkpoint file> or --run <run directory>" in capsys.readouterr().err
    assert demo.main(base + [f"weights={tmp_path / 'w.pth'}"]) == 2
    assert f"weights file {tmp_path / 'w.pth'} not found" in capsys.readouterr().err
    assert demo.main(base + ["--run", str(tmp_path / "nope")]) == 2
    assert f"run directory {tmp_path / 'nope'} not found" in capsys.readouterr().err
    assert demo.main(base + ["model=mask_rcnn_R_50_FPN", f"weights={run_dir / 'model_final.pth'}"]) == 2
    assert "'model' is a config section" in capsys.readouterr().err
    # an exported model's config was fixed at export: an override would be silently ignored
    assert demo.main(base + ["--backend", "onnxruntime", "--run", str(run_dir), "model.mask_threshold=0.3"]) == 2
    assert "drop model.mask_threshold=0.3 (or export again with them)" in capsys.readouterr().err


def test_only_unreadable_images(demo, run_dir, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    assert demo.main(["--input", str(tmp_path / "bad.png"), "--output", str(tmp_path / "out"), "--run", str(run_dir),
                      "--device", "cpu"]) == 2
    assert "error: none of the 1 input image(s) could be read" in capsys.readouterr().err


def test_inputs_and_output_names(demo, images):
    files = demo.expand_inputs([str(images), str(images / "*.png"), str(images / "broken.jpg")])
    assert [p.name for p in files] == ["000001.png", "000002.png", "broken.jpg", "half.png"]  # sorted, once, no .txt
    assert demo.output_names([Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg")]) == ["x.png", "x_2.png", "y.png"]
    assert demo.image_id_of(Path("000042.jpg"), 7) == 42 and demo.image_id_of(Path("cat.jpg"), 7) == 7
