"""Augmentations that leave an image without objects: handled, counted, trained on; never a crash."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from PIL import Image

from framework.config.compose import compose
from framework.data.augmentations import AugSample, Augmentation, crop
from framework.data.build import build_train_loader
from framework.data.mapper import DatasetMapper
from framework.engine.builders import build_model
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks
from framework.utils.events import EventStorage


def write_image(path, height, width):
    Image.new("RGB", (width, height), (90, 120, 150)).save(path)
    return str(path)


def record(path, height, width, annotations, image_id=1):
    return {"file_name": str(path), "height": height, "width": width, "image_id": image_id, "annotations": annotations}


def ann(bbox, segmentation, id=1):
    return {"bbox": list(bbox), "category_id": 0, "iscrowd": 0, "id": id, "segmentation": segmentation}


class CropTopLeft(Augmentation):
    """Keeps the top-left ``size`` x ``size`` pixels."""

    def __init__(self, *, size: int = 8) -> None:
        self.size = size

    def __call__(self, sample: AugSample) -> AugSample:
        return crop(sample, 0, 0, self.size, self.size)


class DropAll(Augmentation):
    def __call__(self, sample: AugSample) -> AugSample:
        return sample.select(torch.zeros(len(sample), dtype=torch.bool))


def test_crop_by_hand():
    boxes = Boxes(torch.tensor([[1.0, 1.0, 8.0, 8.0], [20.0, 20.0, 30.0, 30.0], [5.0, 5.0, 25.0, 25.0]]))
    polygons = PolygonMasks([[np.array([1.0, 1.0, 8.0, 1.0, 8.0, 8.0])], [np.array([20.0, 20.0, 30.0, 20.0, 30.0, 30.0])],
                             [np.array([5.0, 5.0, 25.0, 5.0, 25.0, 25.0])]])
    inst = Instances((40, 40), gt_boxes=boxes, gt_classes=torch.tensor([0, 1, 2]), gt_masks=polygons)
    image = torch.arange(40 * 40, dtype=torch.int64).reshape(1, 40, 40)
    out = crop(AugSample.from_instances(image, inst), 10, 10, 16, 16)  # rows 10..25, cols 10..25
    assert out.image_size == (16, 16) and torch.equal(out.image, image[:, 10:26, 10:26])
    # Translated by (-10, -10) and clamped to [0, 16]: the first box lies outside, so it is empty.
    assert out.boxes.tolist() == [[0, 0, 0, 0], [10, 10, 16, 16], [0, 0, 15, 15]]
    assert out.masks.polygons[1][0].tolist() == [10, 10, 20, 10, 20, 20]  # translated only
    assert inst.gt_masks.polygons[1][0].tolist() == [20, 20, 30, 20, 30, 30]  # the input is intact
    bit = torch.zeros(1, 40, 40, dtype=torch.bool)
    bit[0, 12, 14] = True
    one = Instances((40, 40), gt_boxes=Boxes(torch.tensor([[14.0, 12.0, 15.0, 13.0]])), gt_classes=torch.tensor([0]),
                    gt_masks=BitMasks(bit))
    cropped = crop(AugSample.from_instances(image, one), 10, 10, 16, 16)
    assert cropped.masks.tensor.nonzero().tolist() == [[0, 2, 4]]


def test_a_crop_with_nothing_in_it_gives_an_image_without_objects(tmp_path):
    path = write_image(tmp_path / "a.png", 40, 40)
    d = record(path, 40, 40, [ann([20, 20, 30, 30], [[20, 20, 30, 20, 30, 30]]),
                              ann([10, 25, 35, 38], [[10, 25, 35, 25, 35, 38]], id=2)])
    out = DatasetMapper(is_train=True, augmentations=[CropTopLeft()])(d)
    assert out["image"].shape == (3, 8, 8)
    inst = out["instances"]
    assert len(inst) == 0 and inst.image_size == (8, 8) and isinstance(inst.gt_masks, PolygonMasks)


def test_the_loader_counts_images_without_objects_and_the_model_trains_on_them(tmp_path):
    dicts = []
    for i in range(3):
        path = write_image(tmp_path / f"{i}.png", 64, 80)
        dicts.append(record(path, 64, 80, [ann([50, 50, 75, 62], [[50, 50, 75, 50, 75, 62]])], image_id=i + 1))
    # Image 1's object survives the crop to 48x48, the others' do not (a crop of their empty corner).
    dicts[1]["annotations"] = [ann([4, 4, 20, 20], [[4, 4, 20, 4, 20, 20]])]
    mapper = DatasetMapper(is_train=True, augmentations=[CropTopLeft(size=48)])
    loader = build_train_loader(dicts, mapper, total_batch_size=3, num_workers=0, seed=0, aspect_ratio_grouping=False,
                                sampler={"name": "TrainingSampler", "shuffle": False})
    with EventStorage() as storage:
        batches = list(itertools.islice(iter(loader), 2))
        assert storage.history("data/empty_images").latest() == 4  # 2 of 3 per batch
    assert [len(d["instances"]) for b in batches for d in b] == [0, 1, 0] * 2

    torch.manual_seed(0)
    model = build_model(compose([]), torch.device("cpu")).train()
    losses = model(batches[0])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # An image without objects alone in its batch: background-only targets, no box or mask loss.
    alone = DatasetMapper(is_train=True, augmentations=[DropAll()])(dicts[0])
    losses = model([alone])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_mask"].item() == 0.0


def test_large_scale_jitter_that_crops_every_object_away_is_counted(tmp_path):
    # A 64x64 image with one 8x8 object in its top-left corner, jittered at scale 2 into 32x32: no
    # resize, a 32x32 crop at offset round(32 u) each way, so the object survives only for u < 7.5 / 32;
    # copy-paste jitters the other image alike, so it pastes an object rarely too.
    dicts = [record(write_image(tmp_path / f"{i}.png", 64, 64), 64, 64, [ann([0, 0, 8, 8], [[0, 0, 8, 0, 8, 8]])],
                    image_id=i + 1) for i in range(4)]
    fixed = {"min_scale": 2.0, "max_scale": 2.0}
    mapper = DatasetMapper(is_train=True, augmentations=[{"name": "LargeScaleJitter", "image_size": 32, **fixed},
                                                         {"name": "CopyPaste", **fixed}])
    loader = build_train_loader(dicts, mapper, total_batch_size=4, num_workers=0, seed=0, aspect_ratio_grouping=False)
    with EventStorage() as storage:
        batches = list(itertools.islice(iter(loader), 4))
        counted = storage.history("data/empty_images").latest()
    sizes = [len(d["instances"]) for b in batches for d in b]
    assert all(d["image"].shape == (3, 32, 32) for b in batches for d in b)
    assert counted == sizes.count(0) and 0 < counted < len(sizes)
