"""The analysis the COCO evaluator runs at every evaluation: COCOeval's precision-recall curves, the
counts at score thresholds for TensorBoard, the dAP metrics, the files and the event-storage
entries, on the hand-built cases of tests/error_cases.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from error_cases import SIZE, case, ground_truth, instances_of
from framework.errors import ConfigError
from framework.evaluation import COCOEvaluator
from framework.evaluation.coco_analysis import ERROR_METRICS
from framework.evaluation.coco_metrics import load_coco_gt, run_cocoeval
from framework.evaluation.error_analysis import error_assignments
from framework.evaluation.evaluator import flatten_results
from framework.evaluation.pr_curves import pr_curves_chart, pr_curves_from_cocoeval, score_threshold_counts
from framework.utils.events import EventStorage
from framework.utils.writers import TensorboardWriter

MISS_AP50 = (51 / 101 * 100 + 100) / 2  # dog D missed: dog recall 1/2 at precision 1 (51 of 101 points); cat 100


def test_cocoeval_curves_hand_computed():
    dets, _ = case("miss")
    curves = pr_curves_from_cocoeval(run_cocoeval(load_coco_gt(ground_truth()), dets, "bbox"))
    assert curves.category_names == ("cat", "dog") and curves.area_labels == ("all", "small", "medium", "large")
    t, all_ = curves.iou_index(0.5), 0
    # (COCOeval's precision of 1 comes out as 1 - 2e-16.)
    np.testing.assert_allclose(curves.precision[t, :, 0, all_], np.ones(101), atol=1e-12)  # cat: both found, first
    np.testing.assert_allclose(curves.precision[t, :, 1, all_], [1.0] * 51 + [0.0] * 50, atol=1e-12)  # dog: recall 1/2
    # Perfect boxes match at every IoU: the AP over 0.50:0.95 is the AP50.
    np.testing.assert_allclose(curves.ap(iou=0.5), [100.0, 5100 / 101], atol=1e-9)
    np.testing.assert_allclose(curves.ap(iou=None), [100.0, 5100 / 101], atol=1e-9)
    # Small (area < 32^2): A (cat, 26x30, found) and D (dog, 26x30, missed); large (> 96^2): none.
    np.testing.assert_allclose(curves.ap(iou=0.5, area="small"), [100.0, 0.0], atol=1e-9)
    assert (curves.precision[:, :, :, curves.area_labels.index("large")] == -1).all()
    assert np.isnan(curves.ap(iou=0.5, area="large")).all()
    with pytest.raises(ValueError, match="IoU 0.52 is not one of"):
        curves.iou_index(0.52)


def test_curves_chart_has_a_panel_per_area_range():
    dets, _ = case("dupe")
    curves = pr_curves_from_cocoeval(run_cocoeval(load_coco_gt(ground_truth()), dets, "segm"))
    chart = pr_curves_chart(curves)
    assert chart.mode == "RGB" and chart.width >= 4 * 300 and chart.height > 250
    pixels = np.asarray(chart)
    assert ((pixels == 0).all(axis=2)).sum() > 200  # the black mean curves


def test_score_threshold_counts_hand_computed():
    # Cat: A .9 (TP), its duplicate .85 (FP), C .7 (TP), its duplicate .65 (FP); 2 cat objects.
    dets, _ = case("dupe")
    assignment = error_assignments(gt=ground_truth(), results=dets, tasks=["bbox"])["bbox"]
    counts = score_threshold_counts(assignment, category=1)
    assert set(counts) == {"tp", "fp", "tn", "fn", "precision", "recall"} and all(len(v) == 101 for v in counts.values())
    expected = {  # threshold index (t = i / 100): tp, fp, fn, precision, recall
        0: (2, 2, 0, 0.5, 1.0), 66: (2, 1, 0, 2 / 3, 1.0), 80: (1, 1, 1, 0.5, 0.5), 88: (1, 0, 1, 1.0, 0.5),
        95: (0, 0, 2, 0.0, 0.0),
    }
    for i, (tp, fp, fn, precision, recall) in expected.items():
        got = tuple(float(counts[k][i]) for k in ("tp", "fp", "fn", "precision", "recall"))
        assert got == pytest.approx((tp, fp, fn, precision, recall), abs=1e-12), i
    assert (counts["tn"] == 0).all()
    with pytest.raises(ValueError, match="TensorBoard's limit"):
        score_threshold_counts(assignment, category=1, num_thresholds=200)


def test_pr_curve_reaches_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    writer = TensorboardWriter(str(tmp_path))
    curve = {"tp": [2, 1, 0], "fp": [2, 0, 0], "tn": [0, 0, 0], "fn": [0, 1, 2], "precision": [0.5, 1, 0],
             "recall": [1, 0.5, 0]}
    with EventStorage(start_iter=7) as storage:
        storage.put_pr_curve("pr_bbox/cat", **curve)
        with pytest.raises(ValueError, match="one length in"):
            storage.put_pr_curve("bad", **{**curve, "tp": [1, 2]})
        writer.write()
        assert storage.pr_curves == []
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    acc.Reload()
    event = acc.Tensors("pr_bbox/cat")[0]
    assert event.step == 7
    data = tensor_util.make_ndarray(event.tensor_proto)
    np.testing.assert_allclose(data, [curve[k] for k in ("tp", "fp", "tn", "fn", "precision", "recall")])


def _images(folder) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    dicts = []
    for image_id in (1, 2, 3, 4):
        path = folder / f"{image_id:06d}.png"
        Image.fromarray(np.full((SIZE, SIZE, 3), 40 * image_id, dtype=np.uint8)).save(path)
        dicts.append({"image_id": image_id, "file_name": str(path)})
    return dicts


def _evaluate(evaluator: COCOEvaluator, dets: list[dict]) -> dict:
    evaluator.reset()
    for image_id in (1, 2, 3, 4):
        evaluator.process([{"image_id": image_id, "height": SIZE, "width": SIZE}],
                          [{"instances": instances_of(dets, image_id)}])
    return evaluator.evaluate()


def test_evaluator_adds_metrics_files_curves_and_gallery(tmp_path):
    dets, _ = case("miss")
    out = tmp_path / "inference"
    evaluator = COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1},
                              class_names=["cat", "dog"], output_dir=out, dataset_dicts=_images(tmp_path / "img"),
                              gallery_size=2)
    with EventStorage(start_iter=5) as storage:
        results = _evaluate(evaluator, dets)
    for task in ("bbox", "segm"):
        # Only D is lost, missed: miss and FN carry all of it, every other type nothing.
        dap = {k: results[task][k] for k in ERROR_METRICS}
        assert dap == pytest.approx({**dict.fromkeys(ERROR_METRICS, 0.0), "dAP-miss": 100 - MISS_AP50,
                                     "dAP-FN": 100 - MISS_AP50}, abs=1e-9)
    assert evaluator.metric_names({"pred_masks"}) == set(flatten_results(results))
    for name in ("errors.json", "errors.md", "errors.png", "pr_curves_bbox.png", "pr_curves_segm.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "errors.json").read_text())["segm"]["counts"]["miss"] == 1
    assert sorted(p.name for p in (out / "failures").iterdir()) == ["01_image3.png"]  # the only image that loses

    curves = {c["tag"]: c for c in storage.pr_curves}
    assert set(curves) == {"pr_bbox/cat", "pr_bbox/dog", "pr_segm/cat", "pr_segm/dog"}
    dog = curves["pr_bbox/dog"]
    assert (float(dog["tp"][0]), float(dog["fn"][0]), float(dog["recall"][0]), float(dog["precision"][0])) == (1, 1, 0.5, 1)
    assert dog["global_step"] == 5
    assert [name for name, _, _ in storage.images] == ["failures/01"]

    # Outside a training (no event storage) the same metrics and files, nothing else.
    again = _evaluate(evaluator, dets)
    assert flatten_results(again) == pytest.approx(flatten_results(results), nan_ok=True)


def test_analysis_off_and_its_knobs(tmp_path):
    dets, _ = case("miss")
    off = COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1}, class_names=["cat", "dog"],
                        output_dir=tmp_path, analysis=False)
    results = _evaluate(off, dets)
    assert not any(k.startswith("dAP-") for k in results["bbox"]) and not (tmp_path / "errors.json").exists()
    assert off.metric_names({"pred_masks"}) == set(flatten_results(results))
    with pytest.raises(ConfigError, match="gallery_size > 0 needs analysis=true"):
        COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1}, class_names=["cat", "dog"],
                      analysis=False, gallery_size=2)
    with pytest.raises(ConfigError, match="gallery_size must be >= 0"):
        COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1}, class_names=["cat", "dog"],
                      gallery_size=-1)


def test_no_detections_gives_nan_error_metrics(tmp_path):
    evaluator = COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1},
                              class_names=["cat", "dog"], output_dir=tmp_path, tasks=["bbox"])
    with EventStorage() as storage:
        results = _evaluate(evaluator, [])
    assert results["bbox"]["AP"] == 0.0 and all(math.isnan(results["bbox"][k]) for k in ERROR_METRICS)
    assert storage.pr_curves == []


def test_gallery_images_are_uint8_pictures(tmp_path):
    dets, _ = case("miss")
    evaluator = COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1},
                              class_names=["cat", "dog"], output_dir=tmp_path, dataset_dicts=_images(tmp_path / "img"),
                              gallery_size=1, tasks=["bbox"])
    with EventStorage() as storage:
        _evaluate(evaluator, dets)
    (_, picture, _), = storage.images
    # 100 px images are drawn enlarged to 512 (failure_gallery's min_size), under two header lines.
    assert picture.dtype == torch.uint8 and picture.shape[:2] == (3, 42 + 512) and picture.shape[2] == 2 * 512 + 4


def test_a_failing_analysis_leaves_the_ap_and_nan_error_metrics(tmp_path, monkeypatch, caplog):
    import framework.evaluation.coco_evaluation as coco_evaluation

    def broken(**kwargs):
        raise OSError("disk full")

    dets, _ = case("miss")
    evaluator = COCOEvaluator(gt_json=ground_truth(), dataset_id_to_contiguous_id={1: 0, 2: 1},
                              class_names=["cat", "dog"], output_dir=tmp_path)
    expected = _evaluate(evaluator, dets)
    monkeypatch.setattr(coco_evaluation, "analyze_evaluation", broken)
    with caplog.at_level("WARNING"):
        results = _evaluate(evaluator, dets)
    assert "the error analysis failed (OSError: disk full)" in caplog.text
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == expected[task]["AP"]
        assert all(np.isnan(results[task][k]) for k in ERROR_METRICS)
    assert evaluator.metric_names({"pred_masks"}) == set(flatten_results(results))


def test_a_new_gallery_removes_every_old_picture(tmp_path):
    from framework.evaluation.error_gallery import write_gallery

    for name in ("01_image3.png", "100_image7.png", "notes.png"):
        (tmp_path / name).write_bytes(b"")
    write_gallery([], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.png"]
