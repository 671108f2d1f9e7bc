"""COCOEvaluator on a hand-made 2-image ground truth, checked against hand-computed AP and plain COCOeval.

Ground truth (dataset category ids 3 "cat" and 8 "dog", contiguous 0 and 1):
  image 1 (64x64): cat  box XYWH [4, 4, 20, 20]   area 400  (small)  mask = rectangle (RLE)
                   dog  CROWD [40, 40, 20, 20]    area 400           mask = rectangle (RLE)
  image 2 (64x80): dog  box XYWH [10, 10, 40, 30] area 1200 (medium) mask = polygon
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from framework.data.skipping import SkippedImage
from framework.errors import ConfigError
from framework.evaluation.coco_analysis import ERROR_METRICS
from framework.evaluation import COCOEvaluator, evaluate_predictions_json, inference_on_dataset, instances_to_coco_json
from framework.structures.boxes import Boxes
from framework.structures.instances import Instances

NAN = float("nan")
COCO_TINY = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco_tiny"
MAPPING = {3: 0, 8: 1}
NAMES = ["cat", "dog"]
DOG_POLYGON = [10.0, 10.0, 50.0, 10.0, 50.0, 40.0, 10.0, 40.0]


def rect_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's json RLE (as in crowd annotations): run lengths over the column-major pixels, zeros first."""
    counts, prev, run = [], 0, 0
    for v in mask.flatten(order="F"):
        if v == prev:
            run += 1
        else:
            counts.append(run)
            prev, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def polygon_mask(h: int, w: int, polygon: list[float]) -> np.ndarray:
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([polygon], h, w)))


@pytest.fixture
def gt_json(tmp_path: Path) -> Path:
    # No "info" / "licenses" keys, as in some real exports.
    gt = {
        "images": [
            {"id": 1, "height": 64, "width": 64, "file_name": "a.jpg"},
            {"id": 2, "height": 64, "width": 80, "file_name": "b.jpg"},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0,
             "segmentation": uncompressed_rle(rect_mask(64, 64, 4, 24, 4, 24))},
            {"id": 2, "image_id": 1, "category_id": 8, "bbox": [40, 40, 20, 20], "area": 400, "iscrowd": 1,
             "segmentation": uncompressed_rle(rect_mask(64, 64, 40, 60, 40, 60))},
            {"id": 3, "image_id": 2, "category_id": 8, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0,
             "segmentation": [DOG_POLYGON]},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def make_instances(h: int, w: int, boxes, classes, scores, masks=None) -> Instances:
    fields = dict(
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        scores=torch.tensor(scores, dtype=torch.float32),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
    )
    if masks is not None:
        stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w)
        fields["pred_masks"] = stacked.bool()
    return Instances((h, w), **fields)


def perfect_predictions(cat_shift: int = 0) -> list[tuple[dict, dict]]:
    """(input, output) per image: the non-crowd GT as predictions, the cat moved right by ``cat_shift`` px."""
    s = cat_shift
    img1 = make_instances(64, 64, [[4 + s, 4, 24 + s, 24]], [0], [0.9], [rect_mask(64, 64, 4, 24, 4 + s, 24 + s)])
    img2 = make_instances(64, 80, [[10, 10, 50, 40]], [1], [0.8], [polygon_mask(64, 80, DOG_POLYGON)])
    return [
        ({"image_id": 1, "height": 64, "width": 64}, {"instances": img1}),
        ({"image_id": 2, "height": 64, "width": 80}, {"instances": img2}),
    ]


def run_evaluator(evaluator: COCOEvaluator, pairs) -> dict:
    evaluator.reset()
    for inp, out in pairs:
        evaluator.process([inp], [out])
    return evaluator.evaluate()


def assert_metrics(actual: dict, expected: dict, *, analysis: bool = True) -> None:
    """The AP entries equal ``expected``; the evaluator's error analysis (on by default) adds exactly its dAP entries."""
    assert set(actual) == set(expected) | (set(ERROR_METRICS) if analysis else set())
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), (key, actual[key])
        else:
            assert actual[key] == pytest.approx(value, abs=1e-9), (key, actual[key])


PERFECT = {
    "AP": 100.0, "AP50": 100.0, "AP75": 100.0, "APs": 100.0, "APm": 100.0, "APl": NAN, "AP-cat": 100.0, "AP-dog": 100.0
}


def test_ground_truth_as_predictions_gives_100(gt_json, tmp_path):
    out = tmp_path / "out"
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, output_dir=out)
    results = run_evaluator(ev, perfect_predictions())
    assert set(results) == {"bbox", "segm"}
    assert_metrics(results["bbox"], PERFECT)  # APl: no large object -> NaN, not -100
    assert_metrics(results["segm"], PERFECT)


def test_tasks_default_to_what_the_predictions_carry(gt_json):
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES)
    assert set(run_evaluator(ev, perfect_predictions())) == {"bbox", "segm"}
    box_only = []
    for inp, out in perfect_predictions():
        inst = out["instances"]
        box_only.append((inp, {"instances": make_instances(inp["height"], inp["width"], inst.pred_boxes.tensor.tolist(),
                                                           inst.pred_classes.tolist(), inst.scores.tolist())}))
    results = run_evaluator(ev, box_only)  # reset() forgets that masks were seen before
    assert set(results) == {"bbox"}
    assert_metrics(results["bbox"], PERFECT)


def test_detection_on_crowd_region_is_ignored(gt_json):
    # A confident dog inside the crowd region of image 1: COCOeval matches it to the crowd and ignores it.
    # Were it a false positive ranked above the true dog, dog AP would be 50 and AP 75.
    pairs = perfect_predictions()
    pairs[0] = (
        pairs[0][0],
        {"instances": make_instances(64, 64, [[4, 4, 24, 24], [42, 42, 58, 58]], [0, 1], [0.9, 0.95],
                                     [rect_mask(64, 64, 4, 24, 4, 24), rect_mask(64, 64, 42, 58, 42, 58)])},
    )
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES)
    results = run_evaluator(ev, pairs)
    assert_metrics(results["bbox"], PERFECT)
    assert_metrics(results["segm"], PERFECT)


def _plain_cocoeval_stats(gt_json: Path, results_json: Path, iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes(str(results_json))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_shifted_box_hand_computed_and_equal_to_plain_cocoeval(gt_json, tmp_path):
    # Cat shifted 4 px: IoU = (16*20) / (400 + 400 - 320) = 2/3, a match at IoU 0.50..0.65 (4 of 10
    # thresholds) -> cat AP 40; dog perfect -> AP 70, AP75 = mean(0, 100) = 50, APs = cat, APm = dog.
    out = tmp_path / "out"
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, output_dir=out)
    results = run_evaluator(ev, perfect_predictions(cat_shift=4))
    expected = {
        "AP": 70.0, "AP50": 100.0, "AP75": 50.0, "APs": 40.0, "APm": 100.0, "APl": NAN, "AP-cat": 40.0, "AP-dog": 100.0
    }
    dumped = out / "coco_instances_results.json"
    for task in ("bbox", "segm"):
        assert_metrics(results[task], expected)
        # Both detections match at IoU 0.5 (2/3 and 1): TIDE's AP50 is 100, nothing to fix.
        assert all(results[task][k] == 0.0 for k in ERROR_METRICS), results[task]
        stats = _plain_cocoeval_stats(gt_json, dumped, task)
        plain = [s * 100 if s >= 0 else NAN for s in stats[:6]]
        ours = [results[task][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        np.testing.assert_allclose(ours, plain, rtol=0, atol=1e-12)
        # The json re-scoring helper gives the same numbers too.
        assert_metrics(evaluate_predictions_json(gt_json, dumped, task), expected, analysis=False)


def test_results_json_maps_categories_back_to_dataset_ids(gt_json, tmp_path):
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, output_dir=tmp_path)
    run_evaluator(ev, perfect_predictions())
    results = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(1, 3), (2, 8)]  # contiguous 1 -> id 8
    dog = results[1]
    assert dog["bbox"] == [10.0, 10.0, 40.0, 30.0]  # XYXY [10, 10, 50, 40] -> XYWH
    assert dog["score"] == pytest.approx(0.8)
    assert isinstance(dog["segmentation"]["counts"], str)
    decoded = mask_util.decode({"size": dog["segmentation"]["size"], "counts": dog["segmentation"]["counts"].encode()})
    np.testing.assert_array_equal(decoded, polygon_mask(64, 80, DOG_POLYGON))


def test_instances_to_coco_json_without_masks_or_mapping():
    inst = make_instances(10, 10, [[1, 2, 4, 8]], [5], [0.5])
    expected = [{"image_id": 7, "category_id": 5, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}]
    assert instances_to_coco_json(inst, 7) == expected


def test_no_predictions_gives_zero_ap_and_a_warning(gt_json, caplog):
    empty = [
        ({"image_id": 1, "height": 64, "width": 64}, {"instances": make_instances(64, 64, [], [], [], [])}),
        ({"image_id": 2, "height": 64, "width": 80}, {"instances": make_instances(64, 80, [], [], [], [])}),
    ]
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES)
    with caplog.at_level("WARNING"):
        results = run_evaluator(ev, empty)
    zero = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": 0.0, "APl": NAN, "AP-cat": 0.0, "AP-dog": 0.0}
    assert_metrics(results["bbox"], zero)
    assert_metrics(results["segm"], zero)
    assert "No predictions" in caplog.text
    # Nothing processed at all is the same, with its own warning.
    caplog.clear()
    with caplog.at_level("WARNING"):
        ev.reset()
        assert_metrics(ev.evaluate()["bbox"], zero)
    assert "received no images" in caplog.text


def test_max_dets_per_image_keeps_top_scores(gt_json):
    # Image 2 gets a false positive dog (0.9) above the true dog (0.8).
    # maxDets 100: dog precision [0, 1/2] at recall [0, 1] -> dog AP 50, AP = (100 + 50) / 2 = 75.
    # maxDets 1: only the false positive is kept -> dog AP 0, AP = 50.
    pairs = perfect_predictions()
    two_dogs = make_instances(64, 80, [[60, 50, 75, 60], [10, 10, 50, 40]], [1, 1], [0.9, 0.8])
    pairs[1] = (pairs[1][0], {"instances": two_dogs})
    for max_dets, ap in ((100, 75.0), (2, 75.0), (1, 50.0)):
        ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES,
                           tasks=("bbox",), max_dets_per_image=max_dets)
        results = run_evaluator(ev, pairs)
        assert list(results) == ["bbox"]
        assert results["bbox"]["AP"] == pytest.approx(ap)


def test_evaluate_does_not_mutate_predictions_or_global_rng(gt_json, tmp_path):
    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, output_dir=tmp_path)
    for inp, out in perfect_predictions(cat_shift=4):
        ev.process([inp], [out])
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    dumped = tmp_path / "coco_instances_results.json"
    first = ev.evaluate()
    first_json = json.loads(dumped.read_text())
    second = ev.evaluate()
    # loadRes adds id / area / iscrowd to the dicts it gets, and segm drops bbox: not to the kept ones.
    assert json.loads(dumped.read_text()) == first_json
    assert sorted(first_json[0]) == ["bbox", "category_id", "image_id", "score", "segmentation"]
    assert first["bbox"]["AP"] == second["bbox"]["AP"] == pytest.approx(70.0)
    assert first["segm"]["AP"] == second["segm"]["AP"] == pytest.approx(70.0)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_inference_on_dataset_with_coco_evaluator(gt_json):
    pairs = perfect_predictions()

    class Oracle(torch.nn.Module):
        def forward(self, batch):
            by_id = {inp["image_id"]: out for inp, out in pairs}
            return [by_id[inp["image_id"]] for inp in batch]

    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES)
    results = inference_on_dataset(Oracle(), [[p[0] for p in pairs]], ev)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def test_bad_arguments_are_named(gt_json, tmp_path):
    with pytest.raises(ConfigError, match="'bbx'.*Did you mean 'bbox'"):
        COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, tasks=("bbx",))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCOEvaluator(gt_json=tmp_path / "missing.json", dataset_id_to_contiguous_id=MAPPING, class_names=NAMES)
    with pytest.raises(ValueError, match=r"category ids \[5\]"):
        COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id={3: 0, 5: 1}, class_names=NAMES)
    with pytest.raises(ValueError, match="0..2"):
        COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=["a", "b", "c"])

    ev = COCOEvaluator(gt_json=gt_json, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, tasks=("bbox", "segm"))
    inp = {"image_id": 2, "height": 64, "width": 80}
    with pytest.raises(ValueError, match="pred_masks"):  # segm requested, box-only model
        ev.process([inp], [{"instances": make_instances(64, 80, [[0, 0, 1, 1]], [1], [0.5])}])
    with pytest.raises(ValueError, match=r"predicted classes \[2\]"):
        bad_class = make_instances(64, 80, [[0, 0, 1, 1]], [2], [0.5], [rect_mask(64, 80, 0, 1, 0, 1)])
        ev.process([inp], [{"instances": bad_class}])
    with pytest.raises(ValueError, match="64x80 but its pred_masks are 32x40"):
        small_masks = make_instances(32, 40, [[0, 0, 1, 1]], [1], [0.5], [rect_mask(32, 40, 0, 1, 0, 1)])
        ev.process([inp], [{"instances": small_masks}])
    ev.reset()
    ev.process([{"image_id": 99}], [{"instances": make_instances(64, 80, [], [], [], [])}])
    with pytest.raises(ValueError, match=r"image ids \[99\]"):
        ev.evaluate()


class _ShardLoader:
    """One rank's test batches, and the images its loader left out as unreadable."""

    def __init__(self, batches: list, skipped: list) -> None:
        self.batches, self.skipped = batches, skipped

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def skipped_images(self) -> list:
        return self.skipped


class _Oracle(torch.nn.Module):
    """Returns the given output of each input's image id."""

    def __init__(self, pairs) -> None:
        super().__init__()
        self.by_id = {inp["image_id"]: out for inp, out in pairs}

    def forward(self, batch):
        return [self.by_id[inp["image_id"]] for inp in batch]


def _distributed_worker(rank: int, init_file: str, gt_path: str, out_dir: str) -> None:
    import torch.distributed as dist

    from framework.utils import comm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        report = {
            "all_gather": comm.all_gather(rank * 10),
            "gather": comm.gather(rank * 10, dst=0),
            "seed_equal": len(set(comm.all_gather(comm.shared_random_seed()))) == 1,
        }
        ev = COCOEvaluator(gt_json=gt_path, dataset_id_to_contiguous_id=MAPPING, class_names=NAMES, tasks=("bbox",))
        inp, out = perfect_predictions()[rank]  # each rank sees one of the two images
        ev.process([inp], [out])
        report["results"] = ev.evaluate()
        # bad_data=skip: rank 1's image (the only dog) could not be read. Rank 0 must leave its ground
        # truth out although only rank 1 knows it, and count it.
        pairs = perfect_predictions()
        gone = SkippedImage(file_name="b.jpg", image_id=2, reason="cannot read image b.jpg: not an image")
        loader = _ShardLoader([[pairs[0][0]]], []) if rank == 0 else _ShardLoader([], [gone])
        report["skip_results"] = inference_on_dataset(_Oracle(pairs), loader, ev)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_evaluator_gathers_predictions_across_two_processes(gt_json, tmp_path):
    import torch.multiprocessing as mp

    # fork skips re-importing torch in each child (seconds); spawn where fork does not exist.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (str(tmp_path / "pg"), str(gt_json), str(tmp_path))
    mp.start_processes(_distributed_worker, args=args, nprocs=2, start_method=method)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["all_gather"] == rank1["all_gather"] == [0, 10]
    assert rank0["gather"] == [0, 10] and rank1["gather"] == []
    assert rank0["seed_equal"] and rank1["seed_equal"]
    assert rank0["results"]["bbox"]["AP"] == pytest.approx(100.0)  # both images' predictions reached rank 0
    assert rank1["results"] is None
    skip = rank0["skip_results"]
    assert skip["data"] == {"skipped_test_images": 1.0} and rank1["skip_results"] == {}
    # Only image 1 evaluated: the cat found, no dog to find (counted as missed, AP would be 50).
    assert skip["bbox"]["AP"] == pytest.approx(100.0) and math.isnan(skip["bbox"]["AP-dog"])


@pytest.mark.skipif(not COCO_TINY.is_dir(), reason="shared/data/coco_tiny not available")
def test_coco_tiny_ground_truth_as_predictions_gives_100():
    gt_path = COCO_TINY / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
    cat_ids = sorted(coco.getCatIds())
    mapping = {cat_id: i for i, cat_id in enumerate(cat_ids)}
    names = [coco.cats[c]["name"] for c in cat_ids]
    pairs = []
    for img in coco.dataset["images"]:
        anns = [a for a in coco.imgToAnns[img["id"]] if not a.get("iscrowd", 0)]
        h, w = img["height"], img["width"]
        boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
        masks = [coco.annToMask(a) for a in anns]
        classes = [mapping[a["category_id"]] for a in anns]
        inst = make_instances(h, w, boxes, classes, [1.0] * len(anns), masks)
        pairs.append(({"image_id": img["id"], "height": h, "width": w}, {"instances": inst}))
    ev = COCOEvaluator(gt_json=gt_path, dataset_id_to_contiguous_id=mapping, class_names=names)
    results = run_evaluator(ev, pairs)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert len([k for k in results["bbox"] if k.startswith("AP-")]) == 80
