"""The TIDE error breakdown on hand-built cases with exactly one kind of error each
(tests/evaluation/error_cases.py): that error type's dAP is all of the lost AP (100 - AP50) and
every other type's dAP is 0, to 1e-9 AP points; AP50 equals the value computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from error_cases import CAT, DOG, SINGLE_ERROR_CASES, case, detection, ground_truth, perfect, rle
from framework.evaluation.error_ap import tide_mean_ap
from framework.evaluation.error_analysis import ERROR_TYPES, analyze_errors
from framework.evaluation.error_matching import BKG, CLS, CORRECT, DUPE, LOC, assign_errors
from framework.evaluation.error_inputs import read_ground_truth

TOL = 1e-9  # AP points


@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_perfect_detections_lose_nothing(task):
    dets, _ = case("perfect")
    b = analyze_errors(gt=ground_truth(), results=dets, tasks=[task])[task]
    assert b["AP50"] == 100.0
    assert all(v == 0.0 for v in b["dAP"].values()), b
    assert b["dAP_special"] == {"FP": 0.0, "FN": 0.0}
    assert b["counts"] == dict.fromkeys(ERROR_TYPES, 0)


@pytest.mark.parametrize("task", ["bbox", "segm"])
@pytest.mark.parametrize("name", sorted(SINGLE_ERROR_CASES))
def test_one_error_type_carries_all_the_lost_ap(name, task):
    dets, expected_ap = case(name)
    error = SINGLE_ERROR_CASES[name]
    b = analyze_errors(gt=ground_truth(), results=dets, tasks=[task])[task]
    assert b["AP50"] == pytest.approx(expected_ap, abs=TOL)
    assert b["AP50"] < 100.0
    assert b["dAP"][error] == pytest.approx(100.0 - b["AP50"], abs=TOL)
    others = {t: v for t, v in b["dAP"].items() if t != error}
    assert all(abs(v) <= TOL for v in others.values()), others
    # The totals: perfect precision recovers what duplicates, background and "both" errors cost,
    # perfect recall what misses cost. With cls / loc errors there is no true positive at all:
    # neither ranking the false positives last nor cutting the ground truth to what was found helps.
    lost_to = {"dupe": "FP", "bkg": "FP", "both": "FP", "miss": "FN"}.get(error)
    for special, value in b["dAP_special"].items():
        assert value == pytest.approx(100.0 - b["AP50"] if special == lost_to else 0.0, abs=TOL), (special, b)
    counts = {t: n for t, n in b["counts"].items() if n}
    assert list(counts) == [error], b["counts"]


def test_both_tasks_by_default_when_results_carry_masks():
    dets, _ = case("loc")
    assert set(analyze_errors(gt=ground_truth(), results=dets)) == {"bbox", "segm"}
    for d in dets:
        del d["segmentation"]
    assert set(analyze_errors(gt=ground_truth(), results=dets)) == {"bbox"}


def test_assignment_of_each_detection():
    dets = perfect()
    dets += [detection(1, CAT, [10, 10, 26, 30], 0.85),   # 4: duplicate of A
             detection(2, DOG, [30, 20, 26, 50], 0.5),    # 5: C with the wrong class
             detection(3, DOG, [19, 40, 26, 30], 0.4),    # 6: D shifted to IoU 0.3, but D is taken: loc, not recoverable
             detection(4, DOG, [0, 0, 10, 10], 0.3)]      # 7: on the empty image
    gt = read_ground_truth(ground_truth())[0]
    a = assign_errors(gt, dets, task="bbox")
    # AP order: by image, then by score.
    assert a.det_result_index.tolist() == [0, 4, 1, 2, 5, 3, 6, 7]
    assert a.det_error.tolist() == [CORRECT, DUPE, CORRECT, CORRECT, CLS, CORRECT, LOC, BKG]
    assert a.det_gt.tolist() == [1, 1, 2, 3, 3, 4, 4, -1]
    assert a.det_fix_category.tolist() == [-1] * 8  # every object is taken: a fix can only remove
    assert a.gt_matched.all() and not a.gt_missed.any()


def test_the_first_cls_or_loc_error_about_an_object_is_the_one_a_fix_recovers():
    # C is not detected; a loc error (score .5) and a cls error (score .4) are about it.
    dets = [d for d in perfect() if d["image_id"] != 2]
    dets += [detection(2, CAT, [44, 20, 26, 50], 0.5), detection(2, DOG, [30, 20, 26, 50], 0.4)]
    gt = read_ground_truth(ground_truth())[0]
    a = assign_errors(gt, dets, task="segm")
    on_c = a.det_image_id == 2
    assert a.det_error[on_c].tolist() == [LOC, CLS]
    assert a.det_fix_category[on_c].tolist() == [CAT, -1]
    assert not a.gt_missed.any()  # C is recoverable: not a miss
    b = analyze_errors(gt=ground_truth(), results=dets, tasks=["segm"])["segm"]
    # Fixing loc gives C its true positive: cat AP 51/101 -> 100. Fixing cls only removes the dog
    # false positive, which scores below both dog true positives: nothing gained.
    assert b["dAP"]["loc"] == pytest.approx((100 - 51 / 101 * 100) / 2, abs=TOL)
    assert b["dAP"]["cls"] == 0.0 and b["dAP"]["miss"] == 0.0


def test_a_detection_on_a_crowd_region_of_its_class_is_ignored():
    gt = ground_truth()
    crowd = [0, 60, 30, 30]
    gt["annotations"].append({"id": 9, "image_id": 2, "category_id": CAT, "bbox": crowd, "area": 900,
                              "iscrowd": 1, "segmentation": rle(crowd)})
    dets = perfect() + [detection(2, CAT, [5, 65, 20, 20], 0.99)]
    for task in ("bbox", "segm"):
        b = analyze_errors(gt=gt, results=dets, tasks=[task])[task]
        assert b["AP50"] == 100.0 and all(v == 0.0 for v in b["dAP"].values())
        assert b["counts"]["bkg"] == 1  # still counted as TIDE counts it, but not in the AP
    # The same detection with the other class is a false positive.
    dets[-1]["category_id"] = DOG
    assert analyze_errors(gt=gt, results=dets, tasks=["bbox"])["bbox"]["AP50"] < 100.0


def test_max_dets_keeps_the_highest_scores_per_image():
    dets = perfect() + [detection(4, CAT, [0, 0, 10, 10], 0.01 * k) for k in range(1, 11)]
    gt = read_ground_truth(ground_truth())[0]
    a = assign_errors(gt, dets, task="bbox", max_dets=3)
    kept = a.det_score[a.det_image_id == 4]
    assert kept.tolist() == [0.1, 0.09, 0.08] and a.num_dropped == 7


def test_tide_mean_ap_by_hand():
    # One category, 2 objects: TP (.9), FP (.8), TP (.7): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    ap = tide_mean_ap(categories=np.array([1, 1, 1]), scores=np.array([0.9, 0.8, 0.7]),
                      correct=np.array([True, False, True]), tiebreak=np.arange(3), num_gt={1: 2})
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101 * 100, abs=TOL)
    # A category with detections but no objects counts with AP 0; one with neither does not count.
    ap = tide_mean_ap(categories=np.array([1, 2]), scores=np.array([0.9, 0.8]), correct=np.array([True, False]),
                      tiebreak=np.arange(2), num_gt={1: 1, 3: 0})
    assert ap == pytest.approx(50.0, abs=TOL)
    # Equal scores: the tiebreak decides (an FP read before the TP costs precision).
    first_fp = tide_mean_ap(categories=np.array([1, 1]), scores=np.array([0.5, 0.5]),
                            correct=np.array([True, False]), tiebreak=np.array([1, 0]), num_gt={1: 1})
    assert first_fp == pytest.approx(50.0, abs=TOL)
    assert math.isnan(tide_mean_ap(categories=np.zeros(0, np.int64), scores=np.zeros(0), correct=np.zeros(0, bool),
                                   tiebreak=np.zeros(0, np.int64), num_gt={}))


def test_image_ids_restrict_the_analysis():
    # D (image 3) is missed; without image 3 nothing is.
    dets, _ = case("miss")
    b = analyze_errors(gt=ground_truth(), results=dets, tasks=["bbox"], image_ids=[1, 2, 4])["bbox"]
    assert b["AP50"] == 100.0 and b["counts"]["miss"] == 0


def test_the_coco_an_evaluator_holds_after_cocoeval_gives_the_same_numbers():
    # What an evaluator would pass: its COCO, whose masks COCOeval has turned into RLEs in place.
    from framework.evaluation.coco_metrics import evaluate_coco_results, load_coco_gt

    gt = ground_truth()
    for ann in gt["annotations"]:  # polygons: COCOeval replaces them by RLEs with bytes counts
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    dets, _ = case("dupe")
    expected = analyze_errors(gt=gt, results=dets)
    coco = load_coco_gt(gt)
    for task in ("bbox", "segm"):
        evaluate_coco_results(coco, dets, task)
    assert isinstance(coco.anns[1]["segmentation"]["counts"], bytes)
    assert analyze_errors(gt=coco, results=dets) == expected
