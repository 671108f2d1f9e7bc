"""The error breakdown equals that of tidecv (TIDE's reference package, github.com/dbolya/tide) on
the same inputs: AP50, every dAP, the FP / FN dAPs and the error counts, for boxes and masks, to
1e-9 AP points. tidecv is optional (``pip install tidecv``; not a dependency of the framework):
skipped without it.

Inputs: real COCO images (../shared/data/coco_tiny val, crowd regions and polygons; skipped when
absent) and a generated set, each with detections perturbed from the ground truth (jittered,
re-classed, duplicated, dropped, on background), once with continuous scores and once with scores
rounded to quarters, where TIDE's tie order matters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from framework.evaluation.error_analysis import ERROR_TYPES, analyze_errors

tidecv = pytest.importorskip("tidecv")

TOL = 1e-9  # AP points
TIDE_NAMES = {"Cls": "cls", "Loc": "loc", "Both": "both", "Dupe": "dupe", "Bkg": "bkg", "Miss": "miss"}


def _encode(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def perturbed_detections(coco: COCO, *, seed: int, quantize_scores: bool = False) -> list[dict]:
    """Detections made from ``coco``'s objects (crowd ones too): 15% dropped, boxes jittered (some
    far), 15% with a random class, 20% duplicated, 0-3 background boxes per image; masks are the
    object's mask shifted by half its box's jitter (or the background box)."""
    rng = np.random.default_rng(seed)
    categories = coco.getCatIds()
    out = []
    for image in coco.dataset["images"]:
        h, w = image["height"], image["width"]
        for ann in coco.imgToAnns.get(image["id"], []):
            r = rng.random()
            if r < 0.15:
                continue
            x, y, bw, bh = ann["bbox"]
            jitter = rng.normal(0, 0.15 if r < 0.6 else 0.4, 4)
            box = [x + jitter[0] * bw, y + jitter[1] * bh, bw * np.exp(jitter[2]), bh * np.exp(jitter[3])]
            category = ann["category_id"] if rng.random() > 0.15 else int(rng.choice(categories))
            mask = np.roll(mask_util.decode(coco.annToRLE(ann)), (int(jitter[1] * bh / 2), int(jitter[0] * bw / 2)), axis=(0, 1))
            det = {"image_id": image["id"], "category_id": category, "bbox": [float(v) for v in box],
                   "score": float(rng.random()), "segmentation": _encode(mask)}
            out.append(det)
            if rng.random() < 0.2:
                out.append({**det, "score": float(rng.random()), "bbox": [float(v + rng.normal(0, 2)) for v in box]})
        for _ in range(int(rng.integers(0, 4))):
            bw, bh = rng.uniform(5, w / 3), rng.uniform(5, h / 3)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            mask = np.zeros((h, w), dtype=np.uint8)
            mask[int(y) : int(y + bh), int(x) : int(x + bw)] = 1
            out.append({"image_id": image["id"], "category_id": int(rng.choice(categories)), "bbox": [x, y, bw, bh],
                        "score": float(rng.random()), "segmentation": _encode(mask)})
    if quantize_scores:
        for det in out:
            det["score"] = round(det["score"] * 4) / 4
    return out


def generated_ground_truth(seed: int = 0) -> dict:
    """12 images of random rectangles (3 categories, some overlapping, a few crowd), with polygon masks."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, 13):
        h, w = int(rng.integers(60, 120)), int(rng.integers(60, 120))
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": h, "width": w})
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = float(rng.uniform(8, w / 2)), float(rng.uniform(8, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            crowd = int(rng.random() < 0.1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 4)),
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd,
                                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)]}


def tidecv_breakdown(gt_json: Path, results_json: Path) -> dict:
    from tidecv import TIDE, datasets

    tide = TIDE()
    gt, preds = datasets.COCO(str(gt_json)), datasets.COCOResult(str(results_json))
    for mode in (TIDE.BOX, TIDE.MASK):
        tide.evaluate(gt, preds, mode=mode, name=mode)
    main, special = tide.get_main_errors(), tide.get_special_errors()
    out = {}
    for mode, task in ((TIDE.BOX, "bbox"), (TIDE.MASK, "segm")):
        run = tide.runs[mode]
        out[task] = {
            "AP50": run.ap,
            "dAP": {TIDE_NAMES[k]: v for k, v in main[mode].items()},
            "dAP_special": {"FP": special[mode]["FalsePos"], "FN": special[mode]["FalseNeg"]},
            "counts": {TIDE_NAMES[e.short_name]: len(errors) for e, errors in run.error_dict.items()},
        }
    return out


def assert_same(mine: dict, theirs: dict) -> None:
    for task in ("bbox", "segm"):
        m, t = mine[task], theirs[task]
        assert m["AP50"] == pytest.approx(t["AP50"], abs=TOL), task
        for name in ERROR_TYPES:
            assert m["dAP"][name] == pytest.approx(t["dAP"][name], abs=TOL), (task, name)
        for name in ("FP", "FN"):
            assert m["dAP_special"][name] == pytest.approx(t["dAP_special"][name], abs=TOL), (task, name)
        assert m["counts"] == t["counts"], task


@pytest.mark.parametrize("quantize", [False, True], ids=["scores", "tied_scores"])
def test_equal_to_tidecv_on_coco_tiny(coco_tiny, tmp_path, quantize):
    gt_json = coco_tiny / "annotations" / "instances_val2017.json"
    dets = perturbed_detections(COCO(str(gt_json)), seed=1, quantize_scores=quantize)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(dets))
    mine = analyze_errors(gt=gt_json, results=results)
    assert mine["bbox"]["AP50"] > 5 and sum(mine["bbox"]["counts"].values()) > 100  # a realistic mix
    assert_same(mine, tidecv_breakdown(gt_json, results))


@pytest.mark.parametrize("quantize", [False, True], ids=["scores", "tied_scores"])
def test_equal_to_tidecv_on_a_generated_set(tmp_path, quantize):
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps(generated_ground_truth()))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(perturbed_detections(COCO(str(gt_json)), seed=2, quantize_scores=quantize)))
    mine = analyze_errors(gt=gt_json, results=results)
    assert all(mine["segm"]["counts"][t] > 0 for t in ("cls", "loc", "dupe", "bkg", "miss"))
    assert_same(mine, tidecv_breakdown(gt_json, results))
