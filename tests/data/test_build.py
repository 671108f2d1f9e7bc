"""Train/test loaders on a 6-image synthetic COCO set: reproducibility, batching, resume, errors."""

from __future__ import annotations

import itertools
import random
import traceback

import numpy as np
import pytest
import torch

from framework.data.build import build_test_loader, build_train_loader
from framework.data.coco import load_coco_json
from framework.data.detection_utils import ImageReadError
from framework.data.map_dataset import DatasetMappingError, MapDataset
from framework.data.mapper import DatasetMapper
from framework.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from framework.data.synthetic import generate_synthetic_coco
from framework.errors import ConfigError
from framework.utils import comm


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    json_file = generate_synthetic_coco(root, split="train", num_images=6, seed=0)
    dataset_dicts, _ = load_coco_json(json_file, root / "train")
    assert len(dataset_dicts) == 6
    return dataset_dicts


def train_mapper():
    return DatasetMapper(is_train=True, augmentations=[
        {"name": "ResizeShortestEdge", "short_edge_length": [48, 56, 64], "max_size": 128}, "RandomHorizontalFlip"])


def take(loader, n):
    it = iter(loader)
    out = list(itertools.islice(it, n))
    del it  # shuts down worker processes
    return out


def summary(batches):
    """Everything that must agree between two runs, per image: id, pixels and targets."""
    return [[(d["image_id"], d["image"], d["instances"].gt_boxes.tensor, d["instances"].gt_classes) for d in b]
            for b in batches]


def assert_same(a, b):
    assert len(a) == len(b)
    for batch_a, batch_b in zip(summary(a), summary(b)):
        assert len(batch_a) == len(batch_b)
        for (id_a, *tensors_a), (id_b, *tensors_b) in zip(batch_a, batch_b):
            assert id_a == id_b
            for x, y in zip(tensors_a, tensors_b):
                assert torch.equal(x, y)


def test_same_seed_same_batches_whatever_the_workers(dicts):
    kwargs = dict(total_batch_size=2, seed=5)
    in_process = take(build_train_loader(dicts, train_mapper(), num_workers=0, **kwargs), 4)
    in_workers = take(build_train_loader(dicts, train_mapper(), num_workers=2, **kwargs), 4)
    assert_same(in_process, in_workers)
    assert_same(in_process, take(build_train_loader(dicts, train_mapper(), num_workers=0, **kwargs), 4))
    other = take(build_train_loader(dicts, train_mapper(), num_workers=0, total_batch_size=2, seed=6), 4)
    assert [d["image_id"] for b in other for d in b] != [d["image_id"] for b in in_process for d in b]
    for batch in in_process:  # grouping: one orientation per batch
        assert len(batch) == 2
        assert len({d["width"] > d["height"] for d in batch}) == 1
        for d in batch:
            assert d["image"].dtype == torch.uint8 and min(d["image"].shape[1:]) in (48, 56, 64)
            assert "annotations" not in d and d["instances"].image_size == tuple(d["image"].shape[1:])


def test_batches_follow_the_sampler_and_resume(dicts):
    loader = build_train_loader(dicts, train_mapper(), total_batch_size=3, num_workers=0, seed=9,
                                aspect_ratio_grouping=False)
    batches = take(loader, 4)
    order = list(itertools.islice(TrainingSampler(6, seed=9), 12))
    assert [d["image_id"] for b in batches for d in b] == [dicts[i]["image_id"] for i in order]
    # Resuming at iteration 2 gives batches 2, 3 of the full run, augmentations included.
    resumed = build_train_loader(dicts, train_mapper(), total_batch_size=3, num_workers=0, seed=9,
                                 aspect_ratio_grouping=False, start_iter=2)
    assert_same(take(resumed, 2), batches[2:])


#: Each training sampler, as the config gives it (repeat_thresh 1.0: every category of the 6 images is rare).
SAMPLERS = ["TrainingSampler", {"name": "RepeatFactorTrainingSampler", "repeat_thresh": 1.0}]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=["TrainingSampler", "RepeatFactorTrainingSampler"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact_with_aspect_ratio_grouping(dicts, num_workers, sampler):
    """Image 0 is the only portrait one: it waits in its bucket across iterations, and a run resumed
    at any iteration gets the batches of the uninterrupted run (the buckets are replayed), for each
    training sampler."""
    assert [d["width"] > d["height"] for d in dicts] == [False, True, True, True, True, True]
    kwargs = dict(total_batch_size=2, num_workers=num_workers, seed=9, sampler=sampler)
    full = take(build_train_loader(dicts, train_mapper(), **kwargs), 6)
    for batch in full:
        assert len({d["width"] > d["height"] for d in batch}) == 1
    for start in (1, 3, 4):
        assert_same(take(build_train_loader(dicts, train_mapper(), start_iter=start, **kwargs), 6 - start), full[start:])


def test_loading_leaves_global_rngs_alone(dicts):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    take(build_train_loader(dicts, train_mapper(), total_batch_size=2, num_workers=0, seed=3), 2)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_the_sampler_is_a_component_with_its_own_knobs(dicts):
    loader = build_train_loader(dicts, train_mapper(), total_batch_size=2, num_workers=0, seed=0,
                                sampler={"name": "RepeatFactorTrainingSampler", "repeat_thresh": 1.0},
                                aspect_ratio_grouping=False)
    expected = RepeatFactorTrainingSampler(dicts, 0, repeat_thresh=1.0)
    assert [d["image_id"] for b in take(loader, 3) for d in b] == [dicts[i]["image_id"] for i in take(expected, 6)]
    unshuffled = build_train_loader(dicts, train_mapper(), total_batch_size=3, num_workers=0, seed=0,
                                    sampler={"name": "TrainingSampler", "shuffle": False}, aspect_ratio_grouping=False)
    assert [d["image_id"] for b in take(unshuffled, 3) for d in b] == [d["image_id"] for d in dicts] + [
        d["image_id"] for d in dicts[:3]]


def test_train_loader_config_errors(dicts, monkeypatch):
    with pytest.raises(ConfigError, match=r"dataloader\.train\.sampler\.name.*Did you mean 'TrainingSampler'"):
        build_train_loader(dicts, train_mapper(), total_batch_size=2, sampler="TrainSampler", seed=0)
    with pytest.raises(ConfigError, match=r"repeat_thresh': required value of RepeatFactorTrainingSampler is missing"):
        build_train_loader(dicts, train_mapper(), total_batch_size=2, sampler="RepeatFactorTrainingSampler", seed=0)
    with pytest.raises(ConfigError, match=r"has no knob 'shufle'.*Did you mean 'shuffle'"):
        build_train_loader(dicts, train_mapper(), total_batch_size=2, sampler={"name": "TrainingSampler", "shufle": 0})
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"total_batch_size \(3\).*\(2\)"):
        build_train_loader(dicts, train_mapper(), total_batch_size=3, seed=0)
    with pytest.raises(ValueError, match="empty"):
        build_train_loader([], train_mapper(), total_batch_size=2, seed=0)


def test_corrupt_image_fails_naming_the_file_under_strict(dicts, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    bad = [dict(d, file_name=str(broken)) for d in dicts[:2]]
    for workers in (0, 1):  # the error keeps its type when re-raised from a worker process
        loader = build_train_loader(bad, train_mapper(), total_batch_size=2, num_workers=workers, seed=0,
                                    bad_data="strict")
        with pytest.raises(ImageReadError, match="broken.png") as info:
            take(loader, 1)
        # The traceback holds the worker iterator: free it now, or a later garbage collection of the
        # cycle stalls 5 s in the DataLoader's worker shutdown.
        traceback.clear_frames(info.tb)


def test_map_dataset(dicts):
    ds = MapDataset(dicts, lambda d: {"id": d["image_id"]})
    assert len(ds) == 6 and ds[1] == {"id": dicts[1]["image_id"]} and ds[-1] == {"id": dicts[5]["image_id"]}
    assert ds.raw(2) == dicts[2] and ds.raw(2) is not dicts[2]  # serialized: fresh copies
    with pytest.raises(DatasetMappingError, match=r"000003\.png.*KeyError"):
        MapDataset(dicts, lambda d: d["no_such_key"])[2]
    with pytest.raises(DatasetMappingError, match="returned None"):
        MapDataset(dicts, lambda d: None)[0]


def test_test_loader_order_and_shards(dicts, monkeypatch):
    mapper = DatasetMapper(is_train=False, augmentations=[{"name": "ResizeShortestEdge", "short_edge_length": [32]}])
    batches = list(build_test_loader(dicts, mapper, batch_size=4, num_workers=0))
    assert [[d["image_id"] for d in b] for b in batches] == [[1, 2, 3, 4], [5, 6]]
    d = batches[0][0]
    assert "instances" not in d and (d["height"], d["width"]) == (dicts[0]["height"], dicts[0]["width"])
    monkeypatch.setattr(comm, "get_rank", lambda: 1)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    assert [d["image_id"] for b in build_test_loader(dicts, mapper, num_workers=0) for d in b] == [4, 5, 6]
