"""load_coco_json on small hand-written json files: conversion numbers and every validation rule."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from framework.data.coco import DatasetError, check_images, load_coco_json

# Three images: a.png (w=40, h=30) with annotations, b.png (20x20) with none, c.png (20x20) crowd only.
# Category ids {7, 1, 3} (unsorted, non-contiguous) -> contiguous {1: 0, 3: 1, 7: 2}.
BASE = {
    "images": [
        {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 20, "file_name": "b.png", "width": 20, "height": 20},
        {"id": 30, "file_name": "c.png", "width": 20, "height": 20},
    ],
    "annotations": [
        {"id": 100, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 50.0, "iscrowd": 0,
         "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
        # Extends past the right and bottom border; no area given.
        {"id": 101, "image_id": 10, "category_id": 1, "bbox": [30, 20, 15, 20], "iscrowd": 0,
         "segmentation": [[30, 20, 45, 20, 45, 40]]},
        # Crowd with an uncompressed RLE: 5 background pixels, then 10 foreground (column-major).
        {"id": 102, "image_id": 10, "category_id": 3, "bbox": [0, 5, 1, 10], "area": 10.0, "iscrowd": 1,
         "segmentation": {"size": [30, 40], "counts": [5, 10, 1185]}},
        {"id": 103, "image_id": 30, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 1,
         "segmentation": {"size": [20, 20], "counts": "0`<"}},  # compressed RLE of an all-ones 20x20 mask
    ],
    # Deliberately no "info" and no "licenses".
    "categories": [{"id": 7, "name": "zebra"}, {"id": 1, "name": "apple"}, {"id": 3, "name": "bird"}],
}


def _write(tmp_path, data, images=None):
    for name, (w, h) in (images or {"a.png": (40, 30), "b.png": (20, 20), "c.png": (20, 20)}).items():
        Image.new("RGB", (w, h), (128, 64, 32)).save(tmp_path / name)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _load(tmp_path, data, **kwargs):
    return load_coco_json(_write(tmp_path, data), tmp_path, **kwargs)


def _by_id(dicts):
    return {a["id"]: a for d in dicts for a in d["annotations"]}


def test_contiguous_category_mapping(tmp_path):
    _, meta = _load(tmp_path, BASE)
    assert meta["thing_classes"] == ["apple", "bird", "zebra"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {1: 0, 3: 1, 7: 2}
    assert meta["json_file"] == str((tmp_path / "ann.json").resolve())
    assert meta["image_root"] == str(tmp_path.resolve())
    anns = _by_id(_load(tmp_path, BASE)[0])
    assert [anns[i]["category_id"] for i in (100, 101, 102)] == [2, 0, 1]


def test_record_fields_and_box_conversion(tmp_path):
    dicts, _ = _load(tmp_path, BASE)
    assert [d["image_id"] for d in dicts] == [10]  # b.png empty, c.png crowd only: dropped
    d = dicts[0]
    assert (d["file_name"], d["height"], d["width"]) == (str(tmp_path.resolve() / "a.png"), 30, 40)
    anns = _by_id(dicts)
    # XYWH [2, 3, 10, 5] -> XYXY [2, 3, 12, 8]
    assert anns[100]["bbox"] == [2.0, 3.0, 12.0, 8.0]
    assert anns[100]["area"] == 50.0 and anns[100]["iscrowd"] == 0
    assert anns[100]["segmentation"] == [[2.0, 3.0, 12.0, 3.0, 12.0, 8.0, 2.0, 8.0]]
    # [30, 20, 45, 40] clipped to the 40x30 image -> [30, 20, 40, 30]; area from the clipped box: 10*10
    assert anns[101]["bbox"] == [30.0, 20.0, 40.0, 30.0]
    assert anns[101]["area"] == 100.0


def test_crowd_kept_with_compressed_rle(tmp_path):
    anns = _by_id(_load(tmp_path, BASE)[0])
    crowd = anns[102]
    assert crowd["iscrowd"] == 1 and crowd["category_id"] == 1
    assert crowd["segmentation"] == {"size": [30, 40], "counts": "5:QU1"}  # == mask_util.frPyObjects(...)
    mask = mask_util.decode({"size": [30, 40], "counts": crowd["segmentation"]["counts"].encode()})
    expected = np.zeros((30, 40), np.uint8)
    expected[5:15, 0] = 1  # column-major runs: rows 5..14 of column 0
    np.testing.assert_array_equal(mask, expected)


def test_keep_empty(tmp_path):
    dicts, _ = _load(tmp_path, BASE, keep_empty=True)
    assert [d["image_id"] for d in dicts] == [10, 20, 30]
    assert dicts[1]["annotations"] == []
    assert [a["id"] for a in dicts[2]["annotations"]] == [103]
    assert dicts[2]["annotations"][0]["segmentation"] == {"size": [20, 20], "counts": "0`<"}


def test_json_without_info_and_licenses_loads_in_pycocotools(tmp_path):
    path = _write(tmp_path, BASE)
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [10, 20, 30]
    res = coco.loadRes([{"image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "score": 0.9}])
    assert res.getAnnIds() == [1]


def _expect_error(tmp_path, data, *fragments, **kwargs):
    """Under strict, the load fails listing every problem (test_bad_data.py: what skip does)."""
    kwargs.setdefault("strict", True)
    with pytest.raises(DatasetError) as info:
        _load(tmp_path, data, **kwargs)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    return info.value


def test_missing_image_file(tmp_path):
    _write(tmp_path, BASE)
    (tmp_path / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"image id=20 \(b.png\): image file not found: .*b.png"):
        load_coco_json(tmp_path / "ann.json", tmp_path, strict=True)


def test_missing_json_file(tmp_path):
    with pytest.raises(DatasetError, match="COCO json file not found: .*nope.json"):
        load_coco_json(tmp_path / "nope.json", tmp_path)


def test_unknown_category_id_names_it_and_valid_ids(tmp_path):
    data = copy.deepcopy(BASE)
    data["annotations"][0]["category_id"] = 99
    _expect_error(tmp_path, data, "annotation id=100", "unknown category id 99", "valid ids: [1, 3, 7]")


def test_duplicate_ids(tmp_path):
    data = copy.deepcopy(BASE)
    data["images"][1]["id"] = 10  # b.png has no annotations, so nothing else breaks
    data["annotations"][1]["id"] = 100
    err = _expect_error(tmp_path, data, "image id=10 (b.png): duplicate image id 10 (also used by", "duplicate annotation id 100")
    assert len(err.problems) == 2


def test_bad_image_size(tmp_path):
    data = copy.deepcopy(BASE)
    del data["images"][1]["height"]
    data["images"][2]["width"] = 0
    err = _expect_error(tmp_path, data, "image id=20 (b.png)", "height=None", "image id=30 (c.png)", "width=0")
    assert len(err.problems) == 2


def test_rle_size_mismatch(tmp_path):
    data = copy.deepcopy(BASE)
    data["annotations"][2]["segmentation"]["size"] = [40, 30]
    _expect_error(tmp_path, data, "annotation id=102", "RLE size [40, 30]", "[h, w] = [30, 40]")


def test_uncompressed_rle_with_wrong_total(tmp_path):
    data = copy.deepcopy(BASE)
    data["annotations"][2]["segmentation"]["counts"] = [5, 10, 1000]
    _expect_error(tmp_path, data, "annotation id=102", "summing to h*w = 1200")


def test_degenerate_and_outside_boxes_dropped_with_warning(tmp_path, caplog):
    data = copy.deepcopy(BASE)
    data["annotations"] += [
        {"id": 104, "image_id": 10, "category_id": 1, "bbox": [5, 5, 0, 4], "iscrowd": 0},
        {"id": 105, "image_id": 10, "category_id": 1, "bbox": [40, 5, 3, 4], "iscrowd": 0},  # starts at x = w
        {"id": 106, "image_id": 10, "category_id": 1, "bbox": [-9, 5, 9, 4], "iscrowd": 0},  # ends at x = 0
    ]
    with caplog.at_level(logging.WARNING, logger="framework.data.coco"):
        dicts, _ = _load(tmp_path, data)
    assert sorted(_by_id(dicts)) == [100, 101, 102]
    assert "annotation id=104" in caplog.text and "non-positive width/height" in caplog.text
    assert "annotation id=105" in caplog.text and "annotation id=106" in caplog.text and "outside" in caplog.text
    err = _expect_error(tmp_path, data, "strict")
    assert len(err.problems) == 3


def test_bad_polygons_dropped(tmp_path, caplog):
    data = copy.deepcopy(BASE)
    # One valid polygon kept, one with 4 coordinates and one with an odd count dropped.
    data["annotations"][0]["segmentation"] = [[2, 3, 4, 5], [2, 3, 12, 3, 12, 8], [1, 2, 3, 4, 5, 6, 7]]
    # No valid polygon left: the annotation is dropped.
    data["annotations"][1]["segmentation"] = [[30, 20, 40, 25]]
    with caplog.at_level(logging.WARNING, logger="framework.data.coco"):
        dicts, _ = _load(tmp_path, data)
    anns = _by_id(dicts)
    assert sorted(anns) == [100, 102]
    assert anns[100]["segmentation"] == [[2.0, 3.0, 12.0, 3.0, 12.0, 8.0]]
    assert "annotation id=100: dropped 2 polygon(s)" in caplog.text and "lengths [4, 7]" in caplog.text
    assert "annotation id=101: dropped 1 polygon(s)" in caplog.text and "annotation dropped" in caplog.text


def test_all_problems_reported_at_once_and_truncated(tmp_path):
    data = copy.deepcopy(BASE)
    data["annotations"] += [{"id": 200 + i, "image_id": 10, "category_id": 50 + i, "bbox": [0, 0, 1, 1]} for i in range(25)]
    err = _expect_error(tmp_path, data, "25 problem(s) found", "unknown category id 50", "... and 5 more")
    assert len(err.problems) == 25
    assert "unknown category id 74" in err.problems[-1]


def test_annotation_of_unknown_image(tmp_path):
    data = copy.deepcopy(BASE)
    data["annotations"][0]["image_id"] = 11
    _expect_error(tmp_path, data, "annotation id=100", "image id 11 is not in 'images'")


def test_check_images_reports_corrupt_and_wrong_size(tmp_path):
    dicts, _ = _load(tmp_path, BASE, keep_empty=True)
    assert check_images(dicts) == []
    (tmp_path / "b.png").write_bytes(b"not a png")
    Image.new("RGB", (21, 20)).save(tmp_path / "c.png")
    failures = check_images(dicts, raise_error=False)
    assert len(failures) == 2
    assert "image id=20: cannot read" in failures[0]
    assert "c.png is 21x20 (w x h) but the dataset says 20x20" in failures[1]
    with pytest.raises(DatasetError, match="2 problem"):
        check_images(dicts)


def test_a_training_set_left_empty_names_the_file_and_why(tmp_path):
    no_annotations = {**BASE, "annotations": []}
    with pytest.raises(DatasetError, match=r"ann.json.*no image is left for training: it lists 3 image\(s\), none "
                                           r"left; left out: filtered/no_annotations=3\. A training set needs"):
        _load(tmp_path, no_annotations)
    dicts, _ = _load(tmp_path, no_annotations, keep_empty=True)  # a test set keeps them
    assert len(dicts) == 3
    all_invalid = {**BASE, "annotations": [{**BASE["annotations"][0], "bbox": [2, 3, 0, 5]}]}
    with pytest.raises(DatasetError, match=r"left out: annotation/degenerate_bbox=1, filtered/no_annotations=3; "
                                           r"e\.g\. .*non-positive width"):
        _load(tmp_path, all_invalid)
    with pytest.raises(DatasetError, match="it lists no images"):
        _load(tmp_path, {**BASE, "images": [], "annotations": []})
