"""Inputs the error analysis refuses: one EvaluationInputError naming the file and what is wrong."""

from __future__ import annotations

import json

import pytest

from error_cases import ground_truth, perfect
from framework.errors import EvaluationInputError, InputError
from framework.evaluation.error_analysis import analyze_errors


@pytest.fixture
def files(tmp_path):
    """``write(gt=..., dt=...)`` -> (gt path, results path) of these json-serialisable objects."""

    def write(*, gt=None, dt=None):
        gt_path, dt_path = tmp_path / "gt.json", tmp_path / "results.json"
        gt_path.write_text(json.dumps(ground_truth() if gt is None else gt))
        dt_path.write_text(json.dumps(perfect() if dt is None else dt))
        return gt_path, dt_path

    return write


def _error(gt, dt, **kwargs) -> str:
    with pytest.raises(EvaluationInputError) as info:
        analyze_errors(gt=gt, results=dt, **kwargs)
    assert isinstance(info.value, InputError)  # the tools print it as one line, exit code 2
    return str(info.value)


def test_results_on_unknown_image_ids(files):
    dets = perfect()
    dets[0]["image_id"] = 77
    gt, dt = files(dt=dets)
    message = _error(gt, dt)
    assert str(dt) in message and str(gt) in message and "77" in message and "image ids" in message


def test_results_with_unknown_categories(files):
    dets = perfect()
    dets[1]["category_id"] = 0  # a contiguous class index instead of the json's id
    gt, dt = files(dt=dets)
    message = _error(gt, dt)
    assert str(dt) in message and "category ids 0 " in message and "1 (cat), 2 (dog)" in message


def test_an_empty_results_file(files):
    gt, dt = files(dt=[])
    message = _error(gt, dt)
    assert str(dt) in message and "no detections" in message


def test_a_ground_truth_without_masks_for_segm(files):
    gt, dt = files(gt=ground_truth(with_masks=False))
    message = _error(gt, dt)  # the results carry masks: segm is analyzed by default
    assert str(gt) in message and "no 'segmentation'" in message and "--tasks bbox" in message
    assert set(analyze_errors(gt=gt, results=dt, tasks=["bbox"])) == {"bbox"}


def test_segm_asked_of_results_without_masks(files):
    dets = perfect()
    for d in dets:
        del d["segmentation"]
    gt, dt = files(dt=dets)
    message = _error(gt, dt, tasks=["segm"])
    assert str(dt) in message and "no 'segmentation'" in message


def test_masks_of_another_size_than_their_image(files):
    dets = perfect()
    dets[2]["segmentation"] = {"size": [50, 50], "counts": dets[2]["segmentation"]["counts"]}
    gt, dt = files(dt=dets)
    message = _error(gt, dt)
    assert str(dt) in message and "not the size of their image" in message and "[50, 50] on image 2" in message
    assert set(analyze_errors(gt=gt, results=dt, tasks=["bbox"])) == {"bbox"}


@pytest.mark.parametrize("content, expected", [
    ("{not json", "is not valid json"),
    (json.dumps({"annotations": []}), "must be a json list"),
    (json.dumps([{"image_id": 1, "category_id": 1}]), "finite 'score'"),
    (json.dumps([{"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [1, 2, 3]}]), "no 'bbox'"),
])
def test_malformed_results_files(files, content, expected):
    gt, dt = files()
    dt.write_text(content)
    message = _error(gt, dt)
    assert str(dt) in message and expected in message


def test_malformed_ground_truth_files(files, tmp_path):
    gt, dt = files(gt={"images": []})
    assert "is not a COCO instances json" in _error(gt, dt)
    bad = ground_truth()
    del bad["annotations"][2]["bbox"]
    gt, dt = files(gt=bad)
    assert "annotations[2]" in _error(gt, dt)
    assert "not found" in _error(tmp_path / "missing.json", dt)


def test_unknown_tasks_and_image_ids(files):
    gt, dt = files()
    assert "Did you mean 'segm'" in _error(gt, dt, tasks=["seg"])
    assert "image_ids [99]" in _error(gt, dt, image_ids=[1, 99])
