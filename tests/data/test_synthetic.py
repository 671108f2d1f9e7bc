"""The built-in synthetic dataset: determinism, ids, occlusion-correct masks, sizes, atomic caching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from framework.data import synthetic
from framework.data.coco import load_coco_json
from framework.data.synthetic import ensure_builtin_synthetic, generate_synthetic_coco

NUM_IMAGES = 4


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return root, generate_synthetic_coco(root, split="train", num_images=NUM_IMAGES, seed=0)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic(generated, tmp_path):
    root, _ = generated
    generate_synthetic_coco(tmp_path, split="train", num_images=NUM_IMAGES, seed=0)
    a, b = _files(root), _files(tmp_path)
    assert sorted(a) == ["annotations/instances_train.json"] + [f"train/{i:06d}.png" for i in range(1, NUM_IMAGES + 1)]
    assert a == b


def test_seed_and_split_change_the_data(generated, tmp_path):
    root, json_file = generated
    other_seed = generate_synthetic_coco(tmp_path / "s", split="train", num_images=1, seed=1)
    other_split = generate_synthetic_coco(tmp_path / "v", split="val", num_images=1, seed=0)
    first = json.loads(json_file.read_text())["annotations"][0]
    assert json.loads(other_seed.read_text())["annotations"][0] != first
    assert json.loads(other_split.read_text())["annotations"][0] != first


def test_non_contiguous_category_ids(generated):
    root, json_file = generated
    data = json.loads(json_file.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(2, "disk"), (5, "square"), (9, "triangle"), (12, "cross")]
    assert {a["category_id"] for a in data["annotations"]} <= {2, 5, 9, 12}
    _, meta = load_coco_json(json_file, root / "train", strict=True)
    assert meta["thing_dataset_id_to_contiguous_id"] == {2: 0, 5: 1, 9: 2, 12: 3}


def test_visible_masks_disjoint_and_match_boxes_and_pixels(generated):
    root, json_file = generated
    coco = COCO(str(json_file))
    kinds = set()
    for img_id in coco.getImgIds():
        info = coco.imgs[img_id]
        pixels = np.asarray(Image.open(root / "train" / info["file_name"]), dtype=np.float64)
        assert pixels.shape == (info["height"], info["width"], 3)
        anns = coco.imgToAnns[img_id]
        assert 1 <= len(anns) <= synthetic.MAX_OBJECTS
        union = np.zeros(pixels.shape[:2], dtype=int)
        for ann in anns:
            kinds.add(type(ann["segmentation"]).__name__)
            mask = coco.annToMask(ann).astype(bool)
            union += mask
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert ann["area"] == mask.sum() >= synthetic.MIN_VISIBLE_AREA
            assert ann["iscrowd"] == 0
            # Each visible part is painted in one flat colour plus noise of std 6.
            assert pixels[mask].std(axis=0).max() < 10
        assert union.max() == 1  # no pixel belongs to two instances
    # Both occluded (RLE) and unoccluded (polygon) instances occur in these 4 images.
    assert kinds == {"list", "dict"}


def test_sizes_and_aspect_ratios_vary(generated):
    _, json_file = generated
    data = json.loads(json_file.read_text())
    sides = [(im["width"], im["height"]) for im in data["images"]]
    assert all(160 <= s <= 320 for side in sides for s in side)
    assert any(w > h for w, h in sides) and any(w < h for w, h in sides)
    extents = [max(a["bbox"][2:]) for a in data["annotations"]]
    assert min(extents) < 32 and max(extents) > 80  # small (COCO: < 32 px) and large objects
    shorter = {im["id"]: min(im["width"], im["height"]) for im in data["images"]}
    assert all(max(a["bbox"][2:]) <= shorter[a["image_id"]] / 2 + 1 for a in data["annotations"])


def test_ensure_builtin_is_atomic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "DEFAULT_NUM_IMAGES", {"train": 2, "val": 1})
    dataset_dir = tmp_path / synthetic.SYNTHETIC_VERSION

    # An interrupted generation leaves neither the dataset folder nor its temporary folder.
    real_generate = synthetic.generate_synthetic_coco

    def interrupted(root, **kwargs):
        real_generate(root, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate_synthetic_coco", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_builtin_synthetic(tmp_path)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(synthetic, "generate_synthetic_coco", real_generate)
    paths = ensure_builtin_synthetic(tmp_path)
    assert paths == {
        "train": (dataset_dir / "annotations" / "instances_train.json", dataset_dir / "train"),
        "val": (dataset_dir / "annotations" / "instances_val.json", dataset_dir / "val"),
    }
    assert (dataset_dir / synthetic.MARKER_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [synthetic.SYNTHETIC_VERSION]  # no temporary folder left
    assert len(list((dataset_dir / "train").iterdir())) == 2 and len(list((dataset_dir / "val").iterdir())) == 1

    # With the marker present, nothing is generated again.
    monkeypatch.setattr(synthetic, "generate_synthetic_coco", lambda *a, **k: pytest.fail("regenerated"))
    assert ensure_builtin_synthetic(tmp_path) == paths

    # Without the marker, the folder counts as incomplete and is regenerated from scratch.
    monkeypatch.setattr(synthetic, "generate_synthetic_coco", real_generate)
    (dataset_dir / synthetic.MARKER_FILE).unlink()
    (dataset_dir / "junk").write_text("half-written")
    assert ensure_builtin_synthetic(tmp_path) == paths
    assert not (dataset_dir / "junk").exists() and (dataset_dir / synthetic.MARKER_FILE).is_file()


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_CACHE", str(tmp_path / "cache"))
    assert synthetic.synthetic_cache_dir() == tmp_path / "cache" / "synthetic_v2"
    assert synthetic.synthetic_cache_dir(tmp_path / "other") == tmp_path / "other" / "synthetic_v2"
