"""tools/analyze_results.py end to end on the hand-built dataset of tests/error_cases.py: from
--gt/--dt files, from a run directory the COCO evaluator wrote, from an older run directory (the
ground truth rebuilt from its config.yaml); user errors as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from error_cases import SIZE, case, ground_truth, instances_of
from framework.evaluation import COCOEvaluator
from framework.evaluation.error_analysis import ERROR_TYPES, analyze_errors


def _files(folder: Path, dets: list[dict], gt: dict | None = None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    gt_path, dt_path = folder / "gt.json", folder / "results.json"
    gt_path.write_text(json.dumps(ground_truth() if gt is None else gt))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path


def _check_outputs(out: Path, expected: dict) -> None:
    written = json.loads((out / "errors.json").read_text())
    assert set(written) == set(expected)
    for task, b in expected.items():
        assert written[task]["AP50"] == pytest.approx(b["AP50"], abs=1e-9)
        assert written[task]["dAP"] == pytest.approx(b["dAP"], abs=1e-9)
        assert set(written[task]["dAP"]) == set(ERROR_TYPES)
        assert written[task]["dAP_special"] == pytest.approx(b["dAP_special"], abs=1e-9)
    table = (out / "errors.md").read_text()
    assert "| task | AP50 | cls | loc | both | dupe | bkg | miss | FP | FN |" in table
    with Image.open(out / "errors.png") as chart:
        assert chart.format == "PNG" and chart.width > 300 and chart.height > 100


def test_gt_and_results_files(analyze_results, tmp_path, capsys):
    dets, ap = case("miss")
    gt, dt = _files(tmp_path / "in", dets)
    out = tmp_path / "out"
    assert analyze_results.main(["--gt", str(gt), "--dt", str(dt), "--out", str(out)]) == 0
    expected = analyze_errors(gt=gt, results=dt)
    _check_outputs(out, expected)
    assert expected["bbox"]["dAP"]["miss"] == pytest.approx(100 - ap, abs=1e-9)
    printed = capsys.readouterr().out
    assert f"| bbox | {ap:.2f} |" in printed and f"Wrote errors.json, errors.md, errors.png, pr_curves_bbox.png, pr_curves_segm.png to {out}" in printed


def test_run_directory_written_by_the_evaluator(analyze_results, tmp_path):
    dets, _ = case("dupe")
    gt, _ = _files(tmp_path / "data", dets)
    run = tmp_path / "run"
    evaluator = COCOEvaluator(gt_json=gt, dataset_id_to_contiguous_id={1: 0, 2: 1}, class_names=["cat", "dog"],
                              output_dir=run / "inference")
    for image_id in (1, 2, 3, 4):
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}],
                          [{"instances": instances_of(dets, image_id)}])
    evaluator.evaluate()
    assert json.loads((run / "inference" / "coco_ground_truth.json").read_text()) == {
        **ground_truth(), "info": {}, "licenses": []}
    assert analyze_results.main([str(run)]) == 0
    # float32 boxes and masks of integer rectangles: the same detections as the hand-built ones
    # (the evaluator's scores are float32, which keeps their order).
    _check_outputs(run / "inference", analyze_errors(gt=gt, results=dets))


def test_images_left_out_as_unreadable_are_not_in_the_kept_ground_truth(analyze_results, tmp_path):
    from framework.data.skipping import SkippedImage

    dets, _ = case("perfect")
    gt, _ = _files(tmp_path / "data", dets)
    run = tmp_path / "run"
    evaluator = COCOEvaluator(gt_json=gt, dataset_id_to_contiguous_id={1: 0, 2: 1}, class_names=["cat", "dog"],
                              output_dir=run / "inference")
    for image_id in (1, 2, 4):  # image 3 (object D) could not be read
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}],
                          [{"instances": instances_of(dets, image_id)}])
    evaluator.process_skipped([SkippedImage("000003.png", 3, "cannot read image")])
    evaluator.evaluate()
    kept = json.loads((run / "inference" / "coco_ground_truth.json").read_text())
    assert [i["id"] for i in kept["images"]] == [1, 2, 4] and [a["id"] for a in kept["annotations"]] == [1, 2, 3]
    assert analyze_results.main([str(run), "--tasks", "segm"]) == 0
    written = json.loads((run / "inference" / "errors.json").read_text())
    assert written["segm"]["AP50"] == 100.0 and written["segm"]["counts"]["miss"] == 0  # D is not missed


def test_older_run_directory_rebuilds_the_ground_truth_from_its_config(analyze_results, tmp_path, caplog):
    dets, _ = case("bkg")
    gt, _ = _files(tmp_path / "data", dets)
    images = tmp_path / "data" / "images"
    images.mkdir()
    for image_id in (1, 2, 3, 4):
        Image.fromarray(np.zeros((SIZE, SIZE, 3), dtype=np.uint8)).save(images / f"{image_id:06d}.png")
    run = tmp_path / "run"
    (run / "inference").mkdir(parents=True)
    (run / "inference" / "coco_instances_results.json").write_text(json.dumps(dets))
    cfg = {"dataset": {"test": {"name": "analyze_results_test_val", "json": str(gt), "image_root": str(images)}}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    out = tmp_path / "out"
    assert analyze_results.main([str(run), "--out", str(out), "--tasks", "bbox", "--gallery", "3"]) == 0
    assert "has no inference/coco_ground_truth.json" in caplog.text
    _check_outputs(out, analyze_errors(gt=gt, results=dets, tasks=["bbox"]))
    # The gallery reads the images through the run's test set: only image 4 (a false positive at .95) loses.
    assert sorted(p.name for p in (out / "failures").iterdir()) == ["01_image4.png"]


def test_pr_curves_and_gallery_from_files(analyze_results, tmp_path, capsys):
    dets, _ = case("miss")
    gt, dt = _files(tmp_path / "in", dets)
    images = tmp_path / "images"
    images.mkdir()
    for image in ground_truth()["images"]:
        Image.fromarray(np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)).save(images / image["file_name"])
    out = tmp_path / "out"
    args = ["--gt", str(gt), "--dt", str(dt), "--out", str(out), "--gallery", "2", "--image-root", str(images)]
    assert analyze_results.main(args) == 0
    for name in ("pr_curves_bbox.png", "pr_curves_segm.png", "failures/01_image3.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG", name
    assert not (out / "failures" / "02_image1.png").exists()  # nothing else loses
    assert "failures/01_image3.png" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:
        analyze_results.main(["--gt", str(gt), "--dt", str(dt), "--out", str(out), "--gallery", "2"])
    assert exit_info.value.code == 2 and "--gallery with --gt needs --image-root" in capsys.readouterr().err


def test_user_errors_are_one_line_with_exit_code_2(analyze_results, tmp_path, capsys):
    dets, _ = case("perfect")
    dets[0]["image_id"] = 42
    gt, dt = _files(tmp_path / "in", dets)
    assert analyze_results.main(["--gt", str(gt), "--dt", str(dt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(dt) in err[0] and "42" in err[0]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert analyze_results.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no evaluation results" in err[0] and str(empty) in err[0]

    with pytest.raises(SystemExit) as exit_info:
        analyze_results.main(["--gt", str(gt)])
    assert exit_info.value.code == 2
    assert "give RUN_DIR, or --gt GT.json --dt RESULTS.json --out DIR" in capsys.readouterr().err

