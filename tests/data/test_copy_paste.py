"""Simple copy-paste: occluded masks lose the pasted pixels and get their boxes recomputed, fully covered
objects are removed (hand-built masks); the draws (image, jitter, subset) are reproducible and a
resumed loader maps what the uninterrupted one did; masks are required."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from framework.data.augmentations import AugSample, CopyPaste, horizontal_flip, paste, scale_jitter
from framework.data.augmentations.copy_paste import to_bitmasks
from framework.data.build import build_train_loader
from framework.data.coco import load_coco_json
from framework.data.mapper import DatasetMapper
from framework.data.synthetic import generate_synthetic_coco
from framework.errors import ConfigError
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks


def bit_sample(image, boxes, classes, regions):
    """A sample on ``image`` whose object i covers rows/columns ``regions[i]`` = (y0, y1, x0, x1)."""
    h, w = image.shape[-2:]
    masks = torch.zeros(len(regions), h, w, dtype=torch.bool)
    for i, (y0, y1, x0, x1) in enumerate(regions):
        masks[i, y0:y1, x0:x1] = True
    inst = Instances((h, w), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                     gt_classes=torch.tensor(classes, dtype=torch.int64), gt_masks=BitMasks(masks))
    return AugSample.from_instances(image, inst)


def canvas(value, h=10, w=10):
    return torch.full((3, h, w), value, dtype=torch.uint8)


def test_paste_updates_occluded_masks_and_boxes_and_removes_covered_objects():
    # A untouched (its loose box kept as given), B half covered, C fully covered.
    sample = bit_sample(canvas(0), [[0.0, 0.0, 4.5, 4.5], [5.0, 5.0, 10.0, 10.0], [6.0, 6.0, 8.0, 8.0]], [0, 1, 2],
                        [(0, 4, 0, 4), (5, 10, 5, 10), (6, 8, 6, 8)])
    # P covers rows 5..7, columns 4..9; Q lies outside the canvas (nothing of it to paste).
    other = bit_sample(canvas(200), [[4.0, 5.0, 10.0, 8.0], [0.0, 0.0, 0.0, 0.0]], [3, 1], [(5, 8, 4, 10), (0, 0, 0, 0)])
    out = paste(sample, other)
    assert out.classes.tolist() == [0, 1, 3]
    assert out.boxes.tolist() == [[0.0, 0.0, 4.5, 4.5], [5.0, 8.0, 10.0, 10.0], [4.0, 5.0, 10.0, 8.0]]
    expected = torch.zeros(3, 10, 10, dtype=torch.bool)
    expected[0, 0:4, 0:4] = True
    expected[1, 8:10, 5:10] = True  # B's rows 5..7 went under P
    expected[2, 5:8, 4:10] = True
    assert isinstance(out.masks, BitMasks) and torch.equal(out.masks.tensor, expected)
    image = torch.zeros(3, 10, 10, dtype=torch.uint8)
    image[:, 5:8, 4:10] = 200
    assert torch.equal(out.image, image)
    assert torch.equal(sample.image, canvas(0)) and len(sample) == 3  # the input is intact
    assert paste(sample, other.select(torch.tensor([1]))) is sample  # nothing on the canvas: unchanged


def test_polygons_are_rasterised_and_everything_may_be_covered():
    polygons = PolygonMasks([[np.array([2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0])]])
    inst = Instances((10, 10), gt_boxes=Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]])), gt_classes=torch.tensor([0]),
                     gt_masks=polygons)
    sample = AugSample.from_instances(canvas(0), inst)
    other = bit_sample(canvas(9), [[0.0, 0.0, 10.0, 10.0]], [2], [(0, 10, 0, 10)])
    out = paste(sample, other)  # the pasted object covers the whole image: the sample's object goes
    assert out.classes.tolist() == [2] and torch.equal(out.masks.tensor, torch.ones(1, 10, 10, dtype=torch.bool))
    # An image without objects gets the pasted ones; polygons outside the canvas are cut by rasterising.
    empty = AugSample.from_instances(canvas(0), Instances((10, 10), gt_boxes=Boxes(torch.zeros(0, 4)),
                                                          gt_classes=torch.zeros(0, dtype=torch.int64),
                                                          gt_masks=PolygonMasks([])))
    off = Instances((10, 10), gt_boxes=Boxes(torch.tensor([[6.0, 6.0, 10.0, 10.0]])), gt_classes=torch.tensor([1]),
                    gt_masks=PolygonMasks([[np.array([6.0, 6.0, 14.0, 6.0, 14.0, 14.0, 6.0, 14.0])]]))
    out = paste(empty, AugSample.from_instances(canvas(9), off))
    assert out.classes.tolist() == [1] and out.masks.tensor[0].nonzero().min(0).values.tolist() == [6, 6]
    assert int(out.masks.tensor.sum()) == 16


def test_blurred_alpha_mixes_the_edges_only():
    sample = bit_sample(canvas(0, 20, 20), [], [], [])
    other = bit_sample(canvas(100, 20, 20), [[5.0, 5.0, 15.0, 15.0]], [0], [(5, 15, 5, 15)])
    hard, soft = paste(sample, other), paste(sample, other, blur_sigma=1.0)
    assert torch.equal(hard.masks.tensor, soft.masks.tensor)  # the objects are the hard alpha's
    assert soft.image[0, 10, 10] == 100 and soft.image[0, 0, 0] == 0  # far from the edge: unchanged
    assert 0 < soft.image[0, 5, 10] < 100 and 0 < soft.image[0, 4, 10] < 100  # on both sides of it: mixed


class FixedOthers:
    """OtherSamples that returns one given sample and counts the draws."""

    def __init__(self, other):
        self.other, self.count = other, 0

    def draw(self):
        self.count += 1
        return self.other


def test_the_component_draws_jitter_flip_and_subset_from_the_global_generator():
    sample = bit_sample(canvas(0, 24, 24), [[0.0, 0.0, 4.0, 4.0]], [0], [(0, 4, 0, 4)])
    regions = [(2, 6, 2, 6), (10, 14, 2, 6), (2, 6, 10, 14), (10, 14, 10, 14), (16, 20, 16, 20)]
    other = bit_sample(torch.randint(0, 255, (3, 20, 30), dtype=torch.uint8),
                       [[x0, y0, x1, y1] for y0, y1, x0, x1 in regions], [1, 2, 3, 0, 1], regions)
    aug = CopyPaste(object_prob=0.5, min_scale=0.5, max_scale=1.5, flip_prob=0.5)
    counts = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = aug(sample, FixedOthers(other))
        counts.add(len(out))
        torch.manual_seed(seed)
        assert torch.rand(()).item() < 1.0  # prob
        scale = 0.5 + torch.rand((), dtype=torch.float64).item()
        fraction = torch.rand((), dtype=torch.float64).item()
        jittered = scale_jitter(other, (24, 24), scale=scale, fraction=fraction, pad_value=0.0)
        if torch.rand(()).item() < 0.5:
            jittered = horizontal_flip(jittered)
        chosen = torch.rand(len(jittered)) < 0.5
        expected = paste(sample, jittered.select(chosen))
        assert torch.equal(out.image, expected.image) and torch.equal(out.boxes, expected.boxes)
        assert out.classes.tolist() == expected.classes.tolist()
    assert len(counts) > 1 and max(counts) > 1  # the subsets differ between seeds, and objects were pasted
    never = CopyPaste(prob=0.0)
    others = FixedOthers(other)
    assert never(sample, others) is sample and others.count == 0


def test_masks_are_required_and_knobs_checked():
    with pytest.raises(ConfigError, match=r"augmentations\.1 \(CopyPaste\) works on the instance masks.*mask_on"):
        DatasetMapper(is_train=True, augmentations=["RandomHorizontalFlip", "CopyPaste"], mask_on=False)
    with pytest.raises(ConfigError, match=r"is_train=False.*CopyPaste"):
        DatasetMapper(is_train=False, augmentations=["CopyPaste"])
    with pytest.raises(ConfigError, match=r"object_prob must be in \[0, 1\]"):
        CopyPaste(object_prob=1.5)
    with pytest.raises(ConfigError, match="blur_sigma must be >= 0"):
        CopyPaste(blur_sigma=-1.0)


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    dataset_dicts, _ = load_coco_json(generate_synthetic_coco(root, split="train", num_images=6, seed=0), root / "train")
    return dataset_dicts


def masks_of(d):
    return to_bitmasks(d["instances"].gt_masks, d["instances"].image_size)


def test_a_loader_with_copy_paste_is_reproducible_and_resumes_exactly(dicts):
    def loader(start_iter=0):
        mapper = DatasetMapper(is_train=True, augmentations=[
            {"name": "LargeScaleJitter", "image_size": 64}, "RandomHorizontalFlip", {"name": "CopyPaste", "blur_sigma": 1.0}])
        return build_train_loader(dicts, mapper, total_batch_size=2, num_workers=0, seed=3, start_iter=start_iter)

    def take(start_iter, n):
        it = iter(loader(start_iter))
        return [d for batch in itertools.islice(it, n) for d in batch]

    full, again, resumed = take(0, 4), take(0, 4), take(2, 2)
    assert any(isinstance(d["instances"].gt_masks, BitMasks) for d in full)  # something was pasted
    for a, b in [*zip(full, again), *zip(resumed, full[4:])]:
        assert a["image_id"] == b["image_id"] and torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert a["instances"].gt_classes.tolist() == b["instances"].gt_classes.tolist()
        assert torch.equal(masks_of(a), masks_of(b))
    assert all(d["image"].shape == (3, 64, 64) for d in full)
