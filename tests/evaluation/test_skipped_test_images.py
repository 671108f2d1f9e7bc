"""Evaluation under bad_data=skip with an unreadable test image: the image is left out, named and
counted, and COCOeval leaves its ground truth out, so that AP equals the AP of the same predictions
on a ground truth without that image (rather than counting its objects as missed).

Test set (3 PNG images, categories 1 "disk" -> class 0 and 2 "square" -> class 1):
  image 1 (40x30): disk [2, 3, 10, 5], square [20, 10, 10, 10]
  image 2 (40x30): disk [5, 5, 10, 10], square [25, 5, 8, 8]      <- the file made unreadable
  image 3 (30x30): disk [1, 1, 9, 9]
The model predicts every object of images 1 and 3, the square of image 1 moved by 2 px (IoU 0.67,
so AP is below 100 and depends on which ground truth is used), plus a false positive on image 3.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from PIL import Image

from bad_images import BAD_IMAGES
from framework.data.build import build_test_loader
from framework.data.coco import coco_ground_truth, load_coco_json
from framework.data.mapper import DatasetMapper
from framework.evaluation import COCOEvaluator, evaluate_coco_results, inference_on_dataset
from framework.evaluation.coco_analysis import ERROR_METRICS, error_metrics
from framework.evaluation.coco_evaluation import RESULTS_FILE_NAME
from framework.evaluation.error_analysis import analyze_errors
from framework.evaluation.coco_metrics import load_coco_gt
from framework.structures import Boxes, Instances

GT = {
    "images": [
        {"id": 1, "file_name": "1.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "2.png", "width": 40, "height": 30},
        {"id": 3, "file_name": "3.png", "width": 30, "height": 30},
    ],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 5], "area": 50.0, "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 2, "bbox": [20, 10, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 22, "image_id": 2, "category_id": 2, "bbox": [25, 5, 8, 8], "area": 64.0, "iscrowd": 0},
        {"id": 31, "image_id": 3, "category_id": 1, "bbox": [1, 1, 9, 9], "area": 81.0, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "disk"}, {"id": 2, "name": "square"}],
}
MAPPING = {1: 0, 2: 1}
NAMES = ["disk", "square"]

#: image id -> [(box XYXY, class, score)]
PREDICTIONS = {
    1: [([2, 3, 12, 8], 0, 0.9), ([22, 10, 32, 20], 1, 0.8)],
    2: [([5, 5, 15, 15], 0, 0.9), ([25, 5, 33, 13], 1, 0.9)],  # never asked for: its file is unreadable
    3: [([1, 1, 10, 10], 0, 0.7), ([15, 15, 25, 25], 1, 0.95)],
}


class TableModel(torch.nn.Module):
    """Returns the PREDICTIONS of each input's image id at its original size; records the ids it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, batch):
        outputs = []
        for d in batch:
            self.seen.append(d["image_id"])
            rows = PREDICTIONS[d["image_id"]]
            outputs.append({"instances": Instances(
                (d["height"], d["width"]),
                pred_boxes=Boxes(torch.tensor([r[0] for r in rows], dtype=torch.float32)),
                pred_classes=torch.tensor([r[1] for r in rows]),
                scores=torch.tensor([r[2] for r in rows]),
            )})
        return outputs


@pytest.fixture
def test_set(tmp_path):
    """(dataset dicts, validated ground truth) of GT, its images written as plain PNGs."""
    for img in GT["images"]:
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(tmp_path / img["file_name"])
    path = tmp_path / "val.json"
    path.write_text(json.dumps(GT))
    dicts, _ = load_coco_json(path, tmp_path, keep_empty=True)
    return dicts, coco_ground_truth(dicts, path)


def _without_image(gt: dict, image_id: int) -> dict:
    return {**gt, "images": [i for i in gt["images"] if i["id"] != image_id],
            "annotations": [a for a in gt["annotations"] if a["image_id"] != image_id]}


def _assert_same_metrics(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert (math.isnan(actual[key]) and math.isnan(value)) or actual[key] == pytest.approx(value), key


def _evaluate(dicts, gt, tmp_path, bad_data):
    resize = {"name": "ResizeShortestEdge", "short_edge_length": [32], "max_size": 64}
    loader = build_test_loader(dicts, DatasetMapper(is_train=False, augmentations=[resize]), num_workers=0,
                               bad_data=bad_data)
    evaluator = COCOEvaluator(gt_json=gt, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES,
                              output_dir=tmp_path / "inference", tasks=("bbox",))
    model = TableModel()
    return inference_on_dataset(model, loader, evaluator, warmup_iters=0), model


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_skip_evaluates_the_rest_without_the_ground_truth_of_the_bad_image(tmp_path, test_set, caplog, kind):
    dicts, gt = test_set
    BAD_IMAGES[kind].write(tmp_path / "2.png", 40, 30)
    with caplog.at_level(logging.INFO):
        results, model = _evaluate(dicts, gt, tmp_path, "skip")
    assert model.seen == [1, 3]
    assert results["data"] == {"skipped_test_images": 1.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("left an unreadable test image out" in w and "2.png" in w and BAD_IMAGES[kind].message in w
               for w in warnings), warnings
    assert any("1 test image(s) could not be read" in w for w in warnings), warnings

    # The same predictions (as the evaluator dumped them), on a ground truth without image 2.
    dumped = json.loads((tmp_path / "inference" / RESULTS_FILE_NAME).read_text())
    assert {r["image_id"] for r in dumped} == {1, 3}
    expected = evaluate_coco_results(load_coco_gt(_without_image(gt, 2)), dumped, "bbox",
                                     category_names={1: "disk", 2: "square"})
    # The error analysis (on by default) also leaves image 2 out.
    expected.update(error_metrics(analyze_errors(gt=_without_image(gt, 2), results=dumped, tasks=["bbox"])["bbox"]))
    _assert_same_metrics(results["bbox"], expected)
    assert 0 < results["bbox"]["AP"] < 100
    # Counting image 2's two objects as missed would have given a lower AP.
    with_misses = evaluate_coco_results(load_coco_gt(gt), dumped, "bbox")
    assert with_misses["AP"] < results["bbox"]["AP"] - 10


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_strict_stops_the_evaluation_naming_the_file(tmp_path, test_set, kind):
    dicts, gt = test_set
    bad = BAD_IMAGES[kind]
    bad.write(tmp_path / "2.png", 40, 30)
    with pytest.raises(bad.error, match=bad.message) as info:
        _evaluate(dicts, gt, tmp_path, "strict")
    assert "2.png" in str(info.value)


def test_a_clean_set_under_skip_reports_zero_and_matches_strict(tmp_path, test_set):
    dicts, gt = test_set
    skip, _ = _evaluate(dicts, gt, tmp_path / "skip", "skip")
    strict, _ = _evaluate(dicts, gt, tmp_path / "strict", "strict")
    assert skip.pop("data") == {"skipped_test_images": 0.0}
    assert "data" not in strict  # a strict loader leaves nothing out, so reports nothing
    _assert_same_metrics(skip["bbox"], strict["bbox"])


def test_every_image_unreadable_gives_nan_not_an_evaluation_of_all(tmp_path, test_set, caplog):
    dicts, gt = test_set
    for img in GT["images"]:
        BAD_IMAGES["not an image"].write(tmp_path / img["file_name"], img["width"], img["height"])
    with caplog.at_level(logging.WARNING):
        results, model = _evaluate(dicts, gt, tmp_path, "skip")
    assert model.seen == [] and results["data"] == {"skipped_test_images": 3.0}
    assert set(results["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-disk", "AP-square", *ERROR_METRICS}
    assert all(math.isnan(v) for v in results["bbox"].values())
    assert "every image of the validated ground truth was left out as unreadable" in caplog.text


def test_image_ids_must_not_be_empty_or_unknown(test_set):
    _, gt = test_set
    with pytest.raises(ValueError, match="image_ids is empty"):
        evaluate_coco_results(load_coco_gt(gt), [], "bbox", image_ids=[])
    with pytest.raises(ValueError, match=r"image_ids \[7\] are not images of the ground truth"):
        evaluate_coco_results(load_coco_gt(gt), [], "bbox", image_ids=[1, 7])
