"""The seam for mixing augmentations (copy-paste, mixup, mosaic): how one gets other samples.

A tiny mixing augmentation appends the objects of one other training image (resized to this one)
with their class + 100, so the mapped ground truth shows which image was drawn. The draws must be
the index a generator seeded with (seed, SeedStream.TRAIN_DRAWS, position) gives, whatever the workers, the
random numbers other augmentations take, or the iteration a run resumes at.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torchvision import tv_tensors

from framework.data.augmentations import AugSample, Augmentation, MixingAugmentation, resize
from framework.data.build import build_train_loader
from framework.data.coco import load_coco_json
from framework.data.detection_utils import ImageReadError
from framework.data.draws import MAX_REPLACEMENTS, SeededDraws
from framework.data.mapper import DatasetMapper
from framework.data.synthetic import generate_synthetic_coco
from framework.utils.events import EventStorage
from framework.utils.seeding import SeedStream, derive_seed

OFFSET = 100  # class of an object taken from the other image


class AppendOther(MixingAugmentation):
    """Appends the boxes of ``count`` other samples (resized to this image; their class + 100). Without
    masks (``mask_on=False``): the seam, not the pasting, is under test."""

    def __init__(self, *, count: int = 1) -> None:
        self.count = count

    def __call__(self, sample: AugSample, others) -> AugSample:
        for _ in range(self.count):
            other = resize(others.draw(), sample.image_size)
            boxes = torch.cat([sample.boxes.as_subclass(torch.Tensor), other.boxes.as_subclass(torch.Tensor)])
            sample = dataclasses.replace(sample, boxes=tv_tensors.wrap(boxes, like=sample.boxes),
                                         classes=torch.cat([sample.classes, other.classes + OFFSET]))
        return sample


class DrawGlobal(Augmentation):
    """Takes random numbers from the global generator and changes nothing."""

    def __call__(self, sample: AugSample) -> AugSample:
        torch.rand(17)
        return sample


RESIZE = {"name": "ResizeShortestEdge", "short_edge_length": [48, 64], "max_size": 96}


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    dataset_dicts, _ = load_coco_json(generate_synthetic_coco(root, split="train", num_images=6, seed=0), root / "train")
    return dataset_dicts


def mapper(*augmentations):
    return DatasetMapper(is_train=True, augmentations=[RESIZE, *augmentations, "RandomHorizontalFlip"], mask_on=False)


def take(loader, n):
    it = iter(loader)
    out = list(itertools.islice(it, n))
    del it
    return out


def other_classes(d):
    return sorted((c - OFFSET for c in d["instances"].gt_classes.tolist() if c >= OFFSET))


def own_classes(dataset_dict):
    return sorted(a["category_id"] for a in dataset_dict["annotations"] if not a.get("iscrowd", 0))


def expected_draw(seed, position, n):
    g = torch.Generator().manual_seed(derive_seed(seed, SeedStream.TRAIN_DRAWS, position))
    return int(torch.randint(n, (), generator=g))


def test_the_draws_are_the_seeded_index_of_each_position(dicts):
    loader = build_train_loader(dicts, mapper(AppendOther()), total_batch_size=2, num_workers=0, seed=4,
                                aspect_ratio_grouping=False)
    batches = take(loader, 3)
    for position, d in enumerate(d for b in batches for d in b):
        drawn = expected_draw(4, position, len(dicts))
        assert other_classes(d) == own_classes(dicts[drawn]), position
        own = [c for c in d["instances"].gt_classes.tolist() if c < OFFSET]
        assert sorted(own) == own_classes(next(x for x in dicts if x["image_id"] == d["image_id"]))
    assert len({expected_draw(4, p, len(dicts)) for p in range(6)}) > 1  # not one image for all


def test_the_draws_do_not_depend_on_workers_nor_on_other_augmentations(dicts):
    kwargs = dict(total_batch_size=2, seed=7, aspect_ratio_grouping=False)
    plain = take(build_train_loader(dicts, mapper(AppendOther(count=2)), num_workers=0, **kwargs), 3)
    workers = take(build_train_loader(dicts, mapper(AppendOther(count=2)), num_workers=2, **kwargs), 3)
    noisy = take(build_train_loader(dicts, mapper(DrawGlobal(), AppendOther(count=2)), num_workers=0, **kwargs), 3)
    for a, b, c in zip(*(itertools.chain.from_iterable(x) for x in (plain, workers, noisy))):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert other_classes(a) == other_classes(b) == other_classes(c)  # the same images drawn


def test_resume_draws_what_the_uninterrupted_run_drew(dicts):
    kwargs = dict(total_batch_size=2, num_workers=0, seed=9)  # with aspect-ratio grouping (replayed)
    full = take(build_train_loader(dicts, mapper(AppendOther()), **kwargs), 5)
    for start in (1, 3):
        resumed = take(build_train_loader(dicts, mapper(AppendOther()), start_iter=start, **kwargs), 5 - start)
        for a, b in zip(itertools.chain.from_iterable(resumed), itertools.chain.from_iterable(full[start:])):
            assert a["image_id"] == b["image_id"] and torch.equal(a["image"], b["image"])
            assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
            assert a["instances"].gt_classes.tolist() == b["instances"].gt_classes.tolist()


class ListDataset:
    def __init__(self, dicts):
        self.dicts = dicts

    def __len__(self):
        return len(self.dicts)

    def raw(self, idx):
        return self.dicts[idx]


def test_seeded_draws_replace_unreadable_images_and_list_them():
    data = ListDataset([{"file_name": f"{i}.png", "image_id": i} for i in range(5)])

    def load(d):
        if d["image_id"] % 2:
            raise ImageReadError(f"cannot read image {d['file_name']}: broken")
        return d["image_id"]

    g = torch.Generator().manual_seed(11)
    sequence = [int(torch.randint(5, (), generator=g)) for _ in range(20)]
    draws = SeededDraws(data, 11, skip_bad_images=True)
    got = [draws.draw(load) for _ in range(3)]
    readable = [i for i in sequence if i % 2 == 0]
    assert got == readable[:3] and draws.indices == got
    consumed = sequence.index(readable[2]) + 1  # the draws up to the third readable one
    assert [s.image_id for s in draws.skipped] == [i for i in sequence[:consumed] if i % 2]
    with pytest.raises(ImageReadError, match="broken"):
        strict = SeededDraws(data, 11, skip_bad_images=False)
        for _ in range(5):
            strict.draw(load)
    never = SeededDraws(ListDataset([{"file_name": "x.png", "image_id": 1}]), 0, skip_bad_images=True)
    with pytest.raises(RuntimeError, match=f"{MAX_REPLACEMENTS + 1} images drawn in a row.*x.png"):
        never.draw(load)


def test_an_unreadable_drawn_image_is_replaced_and_counted_by_the_loader(dicts, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = [dict(d) for d in dicts]
    bad[0]["file_name"] = str(broken)
    loader = build_train_loader(bad, mapper(AppendOther(count=3)), total_batch_size=2, num_workers=0, seed=1,
                                aspect_ratio_grouping=False, sampler={"name": "TrainingSampler", "shuffle": False})
    with EventStorage() as storage:
        batches = take(loader, 6)  # 12 samples (images 0..5 twice), each drawing 3 readable others
    # By hand: image 0 as a sample (positions 0 and 6, replaced by image 1), plus every draw of index 0.
    expected = 2
    for position in range(12):
        g = torch.Generator().manual_seed(derive_seed(1, SeedStream.TRAIN_DRAWS, position))
        readable = 0
        while readable < 3:
            if int(torch.randint(6, (), generator=g)) == 0:
                expected += 1
            else:
                readable += 1
    assert expected > 2  # index 0 was drawn too
    assert storage.history("data/skipped_images").latest() == expected
    assert [d["image_id"] for b in batches for d in b][:2] == [dicts[1]["image_id"]] * 2
    assert all(len(other_classes(d)) > 0 for b in batches for d in b)


def test_without_a_loader_the_mapper_says_where_draws_come_from(dicts):
    m = mapper(AppendOther())
    assert m.takes_draws and not mapper().takes_draws
    with pytest.raises(RuntimeError, match="build_train_loader, or pass draws="):
        m(dicts[0])
    draws = SeededDraws(ListDataset(dicts), 3, skip_bad_images=False)
    out = m(dicts[0], draws=draws)  # any DatasetDraws will do
    assert other_classes(out) == own_classes(dicts[draws.indices[0]])
