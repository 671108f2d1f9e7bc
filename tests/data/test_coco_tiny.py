"""Loading the shared coco_tiny subset of COCO 2017 (skipped when it is not present)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from framework.data.builtin import COCO_CATEGORIES
from framework.data.coco import load_coco_json

COCO_TINY = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_tiny").resolve()


@pytest.fixture(scope="module")
def coco_tiny():
    if not (COCO_TINY / "annotations").is_dir():
        pytest.skip(f"coco_tiny not found at {COCO_TINY}")
    return COCO_TINY


# (split, images, non-crowd annotations, crowd annotations): every image has a non-crowd
# annotation, and no annotation is invalid, so nothing is dropped.
@pytest.mark.parametrize("split, num_images, num_objects, num_crowd", [("train2017", 80, 699, 6), ("val2017", 80, 804, 11)])
def test_load_coco_tiny(coco_tiny, split, num_images, num_objects, num_crowd):
    dicts, meta = load_coco_json(coco_tiny / "annotations" / f"instances_{split}.json", coco_tiny / split, strict=True)
    assert len(meta["thing_classes"]) == 80
    assert meta["thing_classes"] == [name for _, name in COCO_CATEGORIES]
    assert meta["thing_dataset_id_to_contiguous_id"][1] == 0 and meta["thing_dataset_id_to_contiguous_id"][90] == 79
    assert len(dicts) == num_images
    anns = [a for d in dicts for a in d["annotations"]]
    assert Counter(a["iscrowd"] for a in anns) == {0: num_objects, 1: num_crowd}
    for d in dicts:
        assert Path(d["file_name"]).is_file()
        for a in d["annotations"]:
            x0, y0, x1, y1 = a["bbox"]
            assert 0 <= x0 < x1 <= d["width"] and 0 <= y0 < y1 <= d["height"]
            assert 0 <= a["category_id"] < 80
            if a["iscrowd"]:
                # COCO stores crowd masks as uncompressed RLE; the loader compresses them.
                assert a["segmentation"]["size"] == [d["height"], d["width"]]
                assert isinstance(a["segmentation"]["counts"], str)
            else:
                assert isinstance(a["segmentation"], list)
