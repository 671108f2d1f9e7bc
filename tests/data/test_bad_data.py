"""Generated broken datasets, every kind of bad item under both policies.

``strict``: the exact problem, named (file, image id, annotation id, what is valid), before any
training. ``skip``: the item is dropped and counted by reason (``DatasetDicts.dropped``, the log,
TensorBoard ``data/*``), and nothing crashes later: not the loader, not COCOeval. An image file that
fails only when read is replaced by the training loader and left out by the test loader, each
reporting it beside the batches (:mod:`framework.data.skipping`), never inside the model's inputs.
"""

from __future__ import annotations

import copy
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from bad_images import BAD_IMAGES as UNREADABLE, BadImage
from framework.data.build import build_test_loader, build_train_loader
from framework.data.coco import DatasetError, check_images, coco_ground_truth, load_coco_json
from framework.data.detection_utils import ImageReadError, read_image
from framework.data.mapper import DatasetMapper
from framework.data.skipping import LoadedBatch, LoadedItem, SkippedImage, collate_loaded
from framework.evaluation.coco_metrics import evaluate_coco_results, load_coco_gt
from framework.utils.events import EventStorage

# Two 40x30 images with two annotations each, one 30x30 image with one: a clean base to break.
BASE = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
        {"id": 3, "file_name": "c.jpg", "width": 30, "height": 30},
    ],
    "annotations": [
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 5], "area": 50.0, "iscrowd": 0,
         "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        {"id": 12, "image_id": 1, "category_id": 2, "bbox": [20, 10, 10, 10], "area": 100.0, "iscrowd": 0,
         "segmentation": [[20, 10, 30, 10, 30, 20, 20, 20]]},
        {"id": 21, "image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100.0, "iscrowd": 0,
         "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
        {"id": 22, "image_id": 2, "category_id": 2, "bbox": [25, 5, 8, 8], "area": 64.0, "iscrowd": 0,
         "segmentation": [[25, 5, 33, 5, 33, 13, 25, 13]]},
        {"id": 31, "image_id": 3, "category_id": 1, "bbox": [1, 1, 9, 9], "area": 81.0, "iscrowd": 0,
         "segmentation": [[1, 1, 10, 1, 10, 10, 1, 10]]},
    ],
    "categories": [{"id": 1, "name": "disk"}, {"id": 2, "name": "square"}],
}


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(ann_id, key, value):
    def edit(data):
        _ann(data, ann_id)[key] = value
    return edit


def _add(**ann):
    def edit(data):
        data["annotations"].append({"image_id": 1, "category_id": 1, "iscrowd": 0, **ann})
    return edit


def _image(image_id, **changes):
    def edit(data):
        img = next(i for i in data["images"] if i["id"] == image_id)
        for k, v in changes.items():
            if v is None:
                img.pop(k)
            else:
                img[k] = v
    return edit


def _drop_annotations_of(image_id, *, keep_crowd=False):
    def edit(data):
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] != image_id]
        if keep_crowd:
            data["annotations"].append({"id": 99, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                                        "bbox": [0, 0, 4, 4], "segmentation": {"size": [30, 30], "counts": "0`<"}})
    return edit


def _remove_file(name):
    def edit(data, root):
        (root / name).unlink()
    return edit


#: (case, edit of the json, message under strict, reason counted under skip, how many, annotation ids left)
CASES = [
    ("zero-width box", _set(11, "bbox", [2, 3, 0, 5]), "annotation id=11: bbox [x, y, w, h] = [2, 3, 0, 5] has "
     "non-positive width/height", "annotation/degenerate_bbox", 1, [12, 21, 22, 31]),
    ("negative box", _set(12, "bbox", [20, 10, -4, 10]), "annotation id=12: bbox [x, y, w, h] = [20, 10, -4, 10] has "
     "non-positive width/height", "annotation/degenerate_bbox", 1, [11, 21, 22, 31]),
    ("NaN box", _set(21, "bbox", [5, float("nan"), 10, 10]), "annotation id=21: 'bbox' must be 4 finite numbers "
     "[x, y, w, h], got [5, nan, 10, 10]", "annotation/bad_bbox", 1, [11, 12, 22, 31]),
    ("box outside the image", _set(22, "bbox", [45, 5, 8, 8]), "annotation id=22: bbox [x, y, w, h] = [45, 5, 8, 8] "
     "lies outside the 40x30 image", "annotation/bbox_outside_image", 1, [11, 12, 21, 31]),
    ("polygon of 2 points", _set(11, "segmentation", [[2, 3, 12, 3]]), "annotation id=11: dropped 1 polygon(s) with "
     "fewer than 3 points, an odd number of coordinates or non-finite ones (lengths [4]); no polygon left, "
     "annotation dropped", "annotation/bad_polygon", 1, [12, 21, 22, 31]),
    ("polygon of odd length", _set(12, "segmentation", [[20, 10, 30, 10, 30, 20, 20]]), "annotation id=12: dropped 1 "
     "polygon(s) with fewer than 3 points, an odd number of coordinates or non-finite ones (lengths [7])",
     "annotation/bad_polygon", 1, [11, 21, 22, 31]),
    ("empty segmentation", _set(21, "segmentation", []), "annotation id=21: 'segmentation' is an empty list; "
     "annotation dropped", "annotation/empty_segmentation", 1, [11, 12, 22, 31]),
    ("RLE of the wrong size", _set(22, "segmentation", {"size": [20, 20], "counts": "0`<"}), "annotation id=22: RLE "
     "size [20, 20] does not match the image size [h, w] = [30, 40]", "annotation/bad_rle", 1, [11, 12, 21, 31]),
    ("unknown category", _set(31, "category_id", 7), "image id=3 (c.jpg), annotation id=31: unknown category id 7 "
     "(valid ids: [1, 2])", "annotation/unknown_category", 1, [11, 12, 21, 22]),
    ("duplicate annotation id", _add(id=12, bbox=[1, 1, 3, 3]), "annotation id=12: duplicate annotation id 12; the "
     "later one dropped", "annotation/duplicate_id", 1, [11, 12, 21, 22, 31]),
    ("annotation of an unknown image", _add(id=40, image_id=9, bbox=[1, 1, 3, 3]), "image id=9, annotation id=40: "
     "image id 9 is not in 'images'", "annotation/unknown_image", 1, [11, 12, 21, 22, 31]),
    ("duplicate image id", lambda d: (_image(3, id=2)(d), _set(31, "image_id", 2)(d)),
     "image id=2 (c.jpg): duplicate image id 2 (also used by",
     "image/duplicate_id", 2, [11, 12]),
    ("image without height", _image(2, height=None), "image id=2 (b.jpg): 'height' and 'width' must be positive "
     "integers, got height=None width=40", "image/bad_size", 1, [11, 12, 31]),
    ("missing image file", _remove_file("b.jpg"), "image id=2 (b.jpg): image file not found: ",
     "image/missing_file", 1, [11, 12, 31]),
]


def _write(root, data):
    for img in BASE["images"]:
        Image.new("RGB", (img["width"], img["height"]), (90, 120, 150)).save(root / img["file_name"])
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _broken(tmp_path, edit):
    data = copy.deepcopy(BASE)
    path = _write(tmp_path, data)
    if edit.__code__.co_argcount == 2:
        edit(data, tmp_path)
    else:
        edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("case, edit, message, reason, count, kept", CASES, ids=[c[0] for c in CASES])
def test_strict_names_the_problem(tmp_path, case, edit, message, reason, count, kept):
    path = _broken(tmp_path, edit)
    with pytest.raises(DatasetError) as info:
        load_coco_json(path, tmp_path, strict=True)
    text = str(info.value)
    assert str(path) in text and "1 problem(s) found" in text and message in text, text


@pytest.mark.parametrize("case, edit, message, reason, count, kept", CASES, ids=[c[0] for c in CASES])
def test_skip_drops_counts_and_leaves_a_ground_truth_cocoeval_takes(tmp_path, caplog, case, edit, message, reason,
                                                                  count, kept):
    path = _broken(tmp_path, edit)
    with caplog.at_level(logging.WARNING, logger="framework.data.coco"):
        dicts, _ = load_coco_json(path, tmp_path, keep_empty=True)
    assert dicts.dropped.get(reason) == count, dicts.dropped
    assert sorted(a["id"] for d in dicts for a in d["annotations"]) == kept
    assert message in caplog.text
    # The validated ground truth: COCOeval runs on it (perfect predictions: AP 100).
    gt = coco_ground_truth(dicts, path)
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    predictions = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                    "segmentation": _rle(a["segmentation"], *sizes[a["image_id"]])} for a in gt["annotations"]]
    for task in ("bbox", "segm"):
        results = evaluate_coco_results(load_coco_gt(gt), copy.deepcopy(predictions), task)
        assert results["AP"] == pytest.approx(100.0), (task, results)


def _rle(segmentation, height, width):
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return segmentation


def test_the_raw_json_would_have_crashed_cocoeval(tmp_path):
    """What the evaluator used to get: an empty segmentation makes pycocotools fail."""
    path = _broken(tmp_path, _set(21, "segmentation", []))
    with pytest.raises(Exception):
        gt = load_coco_gt(path)
        predictions = [{"image_id": 2, "category_id": 1, "score": 1.0,
                        "segmentation": _rle(_ann(BASE, 22)["segmentation"], 30, 40)}]
        evaluate_coco_results(gt, predictions, "segm")


def test_images_without_annotations_or_crowd_only_are_filtered_not_errors(tmp_path, caplog):
    data = copy.deepcopy(BASE)
    _drop_annotations_of(2)(data)
    _drop_annotations_of(3, keep_crowd=True)(data)
    path = _write(tmp_path, data)
    for strict in (False, True):
        with caplog.at_level(logging.INFO, logger="framework.data.coco"):
            dicts, _ = load_coco_json(path, tmp_path, strict=strict)
        assert [d["image_id"] for d in dicts] == [1]
        assert dicts.dropped == {"filtered/no_annotations": 1, "filtered/crowd_only": 1}
        assert "2 image(s) not used for training" in caplog.text
    assert len(load_coco_json(path, tmp_path, keep_empty=True)[0]) == 3  # a test set keeps them


def test_a_dataset_left_empty_says_so_under_both_policies(tmp_path):
    data = copy.deepcopy(BASE)
    for a in data["annotations"]:
        a["segmentation"] = []
    path = _write(tmp_path, data)
    with pytest.raises(DatasetError, match=r"ann\.json: no image is left for training: it lists 3 image\(s\), none "
                                           r"left; left out: annotation/empty_segmentation=5, filtered/no_annotations=3"):
        load_coco_json(path, tmp_path)
    with pytest.raises(DatasetError, match=r"5 problem\(s\) found"):
        load_coco_json(path, tmp_path, strict=True)


# ------------------------------------------------------------------ image files
def _save_16bit(path, w, h):
    Image.fromarray((np.arange(w * h, dtype=np.uint16).reshape(h, w) * 50)).save(path)


def _save_exif_rotated(path, w, h):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: stored h x w
    Image.new("RGB", (h, w), (10, 200, 10)).save(path, exif=exif)


#: Image formats that are not "bad": each loads as a 3-channel uint8 image of the size the json says.
ODD_BUT_VALID = {
    "grayscale": lambda p, w, h: Image.new("L", (w, h), 100).save(p),
    "RGBA": lambda p, w, h: Image.new("RGBA", (w, h), (10, 20, 30, 0)).save(p),
    "palette": lambda p, w, h: Image.new("P", (w, h), 3).save(p),
    "16-bit": _save_16bit,
    "EXIF-rotated": _save_exif_rotated,
}


@pytest.mark.parametrize("kind", list(ODD_BUT_VALID))
def test_odd_image_formats_load(tmp_path, kind):
    path = tmp_path / "odd.png" if kind != "EXIF-rotated" else tmp_path / "odd.jpg"
    ODD_BUT_VALID[kind](path, 40, 30)
    image = read_image(path, "RGB")
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    if kind == "16-bit":  # scaled, not clipped to white
        assert 0 < image.float().mean() < 255 and image.max() == 1199 * 50 // 256
    assert check_images([{"file_name": str(path), "image_id": 1, "width": 40, "height": 30}], decode=True) == []


def _truncate(path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])


#: The three kinds every loader is tested on (tests/bad_images.py), and a JPEG cut short.
#: The default pipelines at a small size.
TRAIN_AUGMENTATIONS = [{"name": "ResizeShortestEdge", "short_edge_length": [32], "max_size": 64}, "RandomHorizontalFlip"]
TEST_AUGMENTATIONS = [{"name": "ResizeShortestEdge", "short_edge_length": [32], "max_size": 64}]

BAD_IMAGES = {
    **UNREADABLE,
    "truncated JPEG": BadImage(lambda p, w, h: _truncate(p), ImageReadError, "cannot read image"),
}


def _dicts_with_a_bad_image(tmp_path, kind):
    path = _write(tmp_path, BASE)
    dicts, _ = load_coco_json(path, tmp_path)
    BAD_IMAGES[kind].write(tmp_path / "b.jpg", 40, 30)  # image id 2, 40x30 in the json
    return dicts


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_strict_bad_image_fails_naming_it_and_is_found_before_training(tmp_path, kind):
    _, error, message = BAD_IMAGES[kind]
    dicts = _dicts_with_a_bad_image(tmp_path, kind)
    mapper = DatasetMapper(is_train=True, augmentations=TRAIN_AUGMENTATIONS)
    loader = build_train_loader(dicts, mapper, total_batch_size=3, num_workers=0, seed=0, bad_data="strict",
                                aspect_ratio_grouping=False)
    with pytest.raises(error, match=message) as info:
        next(iter(loader))
    assert "b.jpg" in str(info.value)
    failures = check_images(dicts, decode=True, raise_error=False)  # what the main job runs first under strict
    assert len(failures) == 1 and "image id=2" in failures[0] and "b.jpg" in failures[0]


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_skip_replaces_a_bad_image_and_counts_it(tmp_path, caplog, kind, num_workers):
    dicts = _dicts_with_a_bad_image(tmp_path, kind)
    mapper = DatasetMapper(is_train=True, augmentations=TRAIN_AUGMENTATIONS)
    loader = build_train_loader(dicts, mapper, total_batch_size=3, num_workers=num_workers, seed=0,
                                aspect_ratio_grouping=False)
    with EventStorage() as storage, caplog.at_level(logging.WARNING, logger="framework.data.train_items"):
        it = iter(loader)
        batches = [next(it) for _ in range(4)]  # 12 samples: b.jpg (image 2) came up 4 times
        del it
    ids = [d["image_id"] for b in batches for d in b]
    assert len(ids) == 12 and 2 not in ids
    # The model gets exactly what the mapper makes: nothing about the replaced image rides along.
    keys = set(DatasetMapper(is_train=True, augmentations=TRAIN_AUGMENTATIONS)(dicts[0]))
    assert all(set(d) == keys for b in batches for d in b)
    assert storage.history("data/skipped_images").latest() == 4
    assert "b.jpg" in caplog.text and "replaced an unreadable training image" in caplog.text
    assert not math.isnan(float(batches[0][0]["image"].float().mean()))


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_test_loader_under_skip_leaves_a_bad_image_out_and_reports_it(tmp_path, caplog, kind, num_workers):
    dicts = _dicts_with_a_bad_image(tmp_path, kind)
    mapper = DatasetMapper(is_train=False, augmentations=TEST_AUGMENTATIONS)
    loader = build_test_loader(dicts, mapper, batch_size=2, num_workers=num_workers, bad_data="skip")
    with caplog.at_level(logging.WARNING, logger="framework.data.inference_loader"):
        batches = list(loader)
    assert [[d["image_id"] for d in b] for b in batches] == [[1], [3]]  # image 2 left out of the first batch
    keys = set(mapper(dicts[0]))
    assert all(set(d) == keys for b in batches for d in b)
    (skipped,) = loader.skipped_images()
    assert (skipped.file_name, skipped.image_id) == (str(tmp_path / "b.jpg"), 2)
    assert BAD_IMAGES[kind].message in skipped.reason and "b.jpg" in skipped.reason
    assert caplog.text.count("left an unreadable test image out of the evaluation") == 1 and "b.jpg" in caplog.text
    # A new pass reports its own images, not the sum of all passes.
    assert [d["image_id"] for b in loader for d in b] == [1, 3] and len(loader.skipped_images()) == 1


def test_test_loader_skips_whole_batches_and_reports_nothing_for_a_clean_set(tmp_path):
    dicts = _dicts_with_a_bad_image(tmp_path, "not an image")
    mapper = DatasetMapper(is_train=False, augmentations=TEST_AUGMENTATIONS)
    loader = build_test_loader(dicts, mapper, batch_size=1, num_workers=0, bad_data="skip")
    assert len(loader) == 3 and [[d["image_id"] for d in b] for b in loader] == [[1], [3]]  # no empty batch
    clean = build_test_loader(dicts[:1], mapper, num_workers=0, bad_data="skip")
    assert len(list(clean)) == 1 and clean.skipped_images() == []


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_test_loader_under_strict_fails_naming_the_file(tmp_path, kind):
    _, error, message = BAD_IMAGES[kind]
    dicts = _dicts_with_a_bad_image(tmp_path, kind)
    mapper = DatasetMapper(is_train=False, augmentations=TEST_AUGMENTATIONS)
    for loader in (build_test_loader(dicts, mapper, num_workers=0, bad_data="strict"),
                   build_test_loader(dicts, mapper, num_workers=0)):  # strict is the default
        with pytest.raises(error, match=message) as info:
            list(loader)
        assert "b.jpg" in str(info.value)
        assert loader.skipped_images() is None  # a strict loader never leaves an image out


def test_test_loader_rejects_an_unknown_policy(tmp_path):
    from framework.errors import ConfigError

    with pytest.raises(ConfigError, match="bad_data must be 'skip' or 'strict', got 'ignore'"):
        build_test_loader([{"file_name": "x.png"}], lambda d: d, bad_data="ignore")


def test_collate_keeps_the_skipped_images_beside_the_inputs():
    a, b, c = ({"image_id": i} for i in (1, 2, 3))
    gone = SkippedImage(file_name="x.png", image_id=9, reason="cannot read image x.png: truncated")
    replaced = SkippedImage(file_name="y.png", image_id=8, reason="cannot read image y.png: not an image")
    batch = collate_loaded([LoadedItem(a), LoadedItem(None, (gone,)), LoadedItem(b, (replaced,)), LoadedItem(c)])
    assert batch == LoadedBatch(inputs=[a, b, c], skipped=[gone, replaced])
    assert batch.inputs[0] is a and a == {"image_id": 1}  # the dicts are passed through untouched
    assert collate_loaded([LoadedItem(None, (gone,))]) == LoadedBatch(inputs=[], skipped=[gone])
