"""The augmentation components reproduce the mapper they replaced, bit for bit.

``legacy_mapper.DatasetMapper`` is a frozen copy of framework/data/mapper.py before augmentations
became components (its ``sample_style`` / ``resize_style`` / ``random_flip`` flags). Each case maps
the same dataset dicts with it and with the new pipeline, from the same global-generator seed, and
requires the same keys, the same image tensors (dtype, shape, every value), the same boxes, classes
and masks (polygon arrays or bit masks), and in training the same generator state afterwards (the
same random draws, so the samples after this one are unchanged too). On the built-in synthetic set
and, when present, on the shared coco_tiny (real COCO photos, crowd RLEs, many polygons).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from framework.config.compose import compose
from framework.data.coco import load_coco_json
from framework.data.mapper import DatasetMapper
from framework.data.synthetic import generate_synthetic_coco
from framework.engine.builders import build_mapper
from framework.structures import BitMasks, Instances, PolygonMasks
from framework.utils.seeding import seed_global_rngs

from legacy_mapper import DatasetMapper as LegacyMapper

COCO_TINY = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_tiny").resolve()
SEEDS = range(4)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    dicts, _ = load_coco_json(generate_synthetic_coco(root, split="train", num_images=6, seed=0), root / "train")
    return dicts


@pytest.fixture(scope="module")
def coco_tiny():
    if not (COCO_TINY / "annotations").is_dir():
        pytest.skip(f"coco_tiny not found at {COCO_TINY}")
    dicts, _ = load_coco_json(COCO_TINY / "annotations" / "instances_val2017.json", COCO_TINY / "val2017")
    # The first images with a crowd annotation (RLE) among them, and portrait and landscape ones.
    crowd = [d for d in dicts if any(a["iscrowd"] for a in d["annotations"])][:2]
    rest = [d for d in dicts if d not in crowd][:3]
    return crowd + rest


def assert_same_value(a, b, where):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, Instances):
        assert a.image_size == b.image_size and list(a.get_fields()) == list(b.get_fields()), where
        for name in a.get_fields():
            assert_same_value(a.get(name), b.get(name), f"{where}.{name}")
    elif isinstance(a, PolygonMasks):
        assert len(a.polygons) == len(b.polygons), where
        for pa, pb in zip(a.polygons, b.polygons):
            assert len(pa) == len(pb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(pa, pb)), where
    elif isinstance(a, BitMasks):
        assert_same_value(a.tensor, b.tensor, where)
    elif hasattr(a, "tensor"):  # Boxes
        assert_same_value(a.tensor, b.tensor, where)
    else:
        assert a == b, where


def assert_same_mapping(old, new, dicts, *, train: bool):
    for d in dicts:
        for seed in SEEDS:
            seed_global_rngs(seed)
            expected = old(d)
            state = torch.get_rng_state()
            seed_global_rngs(seed)
            got = new(d)
            where = f"{Path(d['file_name']).name} seed {seed}"
            assert list(got) == list(expected), where
            for key in expected:
                assert_same_value(got[key], expected[key], f"{where}: {key}")
            if train:  # the same draws: what the loader maps next is unchanged too
                assert torch.equal(torch.get_rng_state(), state), where


def resize(lengths, max_size, name="ResizeShortestEdge"):
    return {"name": name, "short_edge_length": list(lengths), "max_size": max_size}


FLIP = {"name": "RandomHorizontalFlip"}

# (legacy kwargs, new kwargs): every combination of the old flags the configs used, and more.
CASES = {
    "train": (dict(is_train=True, min_size=(192, 224, 256), max_size=400),
              dict(is_train=True, augmentations=[resize((192, 224, 256), 400), FLIP])),
    "test": (dict(is_train=False, min_size=(224,), max_size=400, random_flip="none"),
             dict(is_train=False, augmentations=[resize((224,), 400)])),
    "range_rgb": (dict(is_train=True, min_size=(100, 140), max_size=300, sample_style="range", image_format="RGB"),
                  dict(is_train=True, augmentations=[resize((100, 140), 300, "ResizeShortestEdgeRange"), FLIP],
                       image_format="RGB")),
    "bitmask": (dict(is_train=True, min_size=(120, 160), max_size=250, mask_format="bitmask"),
                dict(is_train=True, augmentations=[resize((120, 160), 250), FLIP], mask_format="bitmask")),
    "no_flip_no_mask": (dict(is_train=True, min_size=(150,), max_size=250, random_flip="none", mask_on=False),
                        dict(is_train=True, augmentations=[resize((150,), 250)], mask_on=False)),
    "torchvision": (dict(is_train=True, min_size=(150, 180), max_size=300, resize_style="torchvision"),
                    dict(is_train=True, augmentations=[resize((150, 180), 300, "ResizeShortestEdgeTorchvision"), FLIP])),
    "torchvision_bitmask": (dict(is_train=True, min_size=(150,), max_size=300, resize_style="torchvision",
                                 mask_format="bitmask"),
                            dict(is_train=True, augmentations=[resize((150,), 300, "ResizeShortestEdgeTorchvision"), FLIP],
                                 mask_format="bitmask")),
    "torchvision_test_no_resize": (dict(is_train=False, min_size=(0,), resize_style="torchvision"),
                                   dict(is_train=False, augmentations=[resize((0,), 1333, "ResizeShortestEdgeTorchvision")])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pipeline_reproduces_the_old_mapper_on_the_synthetic_set(synthetic, case):
    old, new = CASES[case]
    assert_same_mapping(LegacyMapper(**old), DatasetMapper(**new), synthetic, train=old["is_train"])


@pytest.mark.parametrize("case", ["train", "test", "bitmask", "torchvision", "no_flip_no_mask"])
def test_pipeline_reproduces_the_old_mapper_on_coco_tiny(coco_tiny, case):
    old, new = CASES[case]
    assert_same_mapping(LegacyMapper(**old), DatasetMapper(**new), coco_tiny, train=old["is_train"])


# The composed configs (default job and presets) against the old flags they used to set.
PRESETS = {
    (): (dict(min_size=(192, 224, 256), max_size=400), dict(min_size=(224,), max_size=400)),
    ("experiment=mask_rcnn_R_50_FPN_1x_coco",): (dict(min_size=(640, 672, 704, 736, 768, 800), max_size=1333),
                                                dict(min_size=(800,), max_size=1333)),
    ("experiment=zoo_mask_rcnn_R_50_FPN_3x",): (dict(min_size=(640, 672, 704, 736, 768, 800), max_size=1333),
                                               dict(min_size=(800,), max_size=1333)),
    ("experiment=torchvision_R_50_FPN_coco",): (dict(min_size=(800,), max_size=1333, resize_style="torchvision",
                                                     image_format="RGB"),
                                                dict(min_size=(0,), resize_style="torchvision", image_format="RGB")),
}


@pytest.mark.parametrize("overrides", sorted(PRESETS))
def test_configured_pipelines_reproduce_the_old_settings(synthetic, overrides):
    cfg = compose(list(overrides))
    old_train, old_test = PRESETS[overrides]
    dicts = synthetic[:2]
    assert_same_mapping(LegacyMapper(is_train=True, **old_train), build_mapper(cfg, "train"), dicts, train=True)
    assert_same_mapping(LegacyMapper(is_train=False, random_flip="none", **old_test), build_mapper(cfg, "test"), dicts,
                        train=False)


def test_the_cases_draw_both_flips_and_several_sizes():
    """The seeds above exercise what is compared: both flip outcomes and every size of the default list."""
    legacy = LegacyMapper(is_train=True, min_size=(192, 224, 256), max_size=400)
    drawn = set()
    for seed in range(24):
        seed_global_rngs(seed)
        drawn.add((legacy.sample_short_edge(), legacy.sample_flip()))
    first = set()
    for seed in SEEDS:
        seed_global_rngs(seed)
        first.add((legacy.sample_short_edge(), legacy.sample_flip()))
    assert {flip for _, flip in first} == {False, True}
    assert {size for size, _ in drawn} == {192, 224, 256}
