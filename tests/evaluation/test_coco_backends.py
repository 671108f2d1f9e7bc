"""The faster-coco-eval backend gives pycocotools' metrics on the same inputs: every AP entry (the
six summary APs and the per-category ones), box and mask, on predictions that are neither perfect
nor empty (jittered boxes, shifted masks, wrong classes, a crowd region in coco_tiny)."""

from __future__ import annotations

import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest

from framework.data.builtin import ensure_builtin_synthetic
from framework.errors import ConfigError
from framework.evaluation import COCOEvaluator
from framework.evaluation.coco_backend import coco_api
from framework.evaluation.coco_metrics import evaluate_coco_results, load_coco_gt

pytest.importorskip("faster_coco_eval", reason="the fast-eval extra is not installed")


def _annotation_mask(ann: dict, image: dict) -> np.ndarray:
    h, w = image["height"], image["width"]
    segm = ann["segmentation"]
    rle = mask_util.merge(mask_util.frPyObjects(segm, h, w)) if isinstance(segm, list) else (
        mask_util.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else segm)
    return mask_util.decode(rle)


def _noisy_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """Per gt object: a jittered box with its mask shifted by a few pixels, a second weaker one,
    and one of another class; scores random."""
    rng = np.random.default_rng(seed)
    images = {i["id"]: i for i in gt["images"]}
    categories = [c["id"] for c in gt["categories"]]
    results = []
    for ann in gt["annotations"]:
        image = images[ann["image_id"]]
        mask = _annotation_mask(ann, image)
        x, y, w, h = ann["bbox"]
        for k in range(3):
            dx, dy = rng.integers(-3, 4, size=2) * (k + 1)
            shifted = np.roll(np.roll(mask, int(dy), axis=0), int(dx), axis=1)
            rle = mask_util.encode(np.asfortranarray(shifted.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            category = ann["category_id"] if k < 2 else categories[(categories.index(ann["category_id"]) + 1) % len(categories)]
            results.append({"image_id": ann["image_id"], "category_id": category, "score": float(rng.random()),
                            "bbox": [x + dx, y + dy, w * (1 + 0.1 * rng.normal()), h * (1 + 0.1 * rng.normal())],
                            "segmentation": rle})
    return results


def _gt_sets(coco_tiny_root=None) -> list[tuple[str, dict]]:
    val_json, _ = ensure_builtin_synthetic()["val"]
    sets = [("synthetic_val", json.loads(val_json.read_text()))]
    if coco_tiny_root is not None:
        sets.append(("coco_tiny", json.loads((coco_tiny_root / "annotations" / "instances_val2017.json").read_text())))
    return sets


def _compare(gt: dict, task: str, **kwargs) -> dict:
    results = _noisy_predictions(gt)
    reference = evaluate_coco_results(load_coco_gt(gt), results, task, **kwargs)
    fast = evaluate_coco_results(load_coco_gt(gt, backend="faster_coco_eval"), results, task, **kwargs)
    assert reference.keys() == fast.keys()
    for name, value in reference.items():
        assert (math.isnan(value) and math.isnan(fast[name])) or abs(value - fast[name]) <= 1e-9, (task, name)
    return reference


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_faster_coco_eval_gives_pycocotools_metrics(task):
    (_, gt), = _gt_sets()
    metrics = _compare(gt, task)
    assert 5.0 < metrics["AP"] < 95.0  # neither perfect nor empty: the comparison means something
    _compare(gt, task, max_dets_per_image=5, image_ids=[i["id"] for i in gt["images"][:20]])


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_faster_coco_eval_on_real_coco_with_crowd_regions(task, coco_tiny):
    (_, _), (_, gt) = _gt_sets(coco_tiny)
    assert any(a.get("iscrowd") for a in gt["annotations"])
    _compare(gt, task)


def test_the_evaluator_takes_the_backend_and_names_a_missing_package(monkeypatch):
    val_json, _ = ensure_builtin_synthetic()["val"]
    gt = json.loads(val_json.read_text())
    ids = {c["id"]: i for i, c in enumerate(gt["categories"])}
    evaluator = COCOEvaluator(gt, ids, [c["name"] for c in gt["categories"]], backend="faster_coco_eval")
    assert type(evaluator._coco_gt).__module__.startswith("faster_coco_eval")
    monkeypatch.setitem(__import__("sys").modules, "faster_coco_eval", None)
    with pytest.raises(ConfigError, match=r"faster-coco-eval package: pip install 'framework\[fast-eval\]'"):
        coco_api("faster_coco_eval")
    with pytest.raises(ConfigError, match="Did you mean 'pycocotools'"):
        coco_api("pycocotool")
