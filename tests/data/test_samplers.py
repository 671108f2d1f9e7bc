"""Samplers and aspect-ratio grouping: shards, seeded streams, resume offsets, repeat factors by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from framework.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingBatchSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from framework.utils import comm


@pytest.fixture
def as_rank(monkeypatch):
    """``as_rank(r, w)`` makes the samplers believe they run as rank r of w processes."""

    def set_rank(rank: int, world_size: int) -> None:
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: world_size)

    return set_rank


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


# ---------------------------------------------------------------------- InferenceSampler
def test_inference_sampler_shards(as_rank):
    shards = []
    for rank in range(3):
        as_rank(rank, 3)
        shards.append(list(InferenceSampler(10)))
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    as_rank(2, 3)
    assert list(InferenceSampler(2)) == [] and len(InferenceSampler(2)) == 0  # more ranks than images
    as_rank(0, 1)
    assert list(InferenceSampler(4)) == [0, 1, 2, 3]


# ---------------------------------------------------------------------- TrainingSampler
def test_training_sampler_is_the_seeded_permutation_stream():
    g = torch.Generator().manual_seed(7)
    expected = torch.randperm(5, generator=g).tolist() + torch.randperm(5, generator=g).tolist()
    stream = take(TrainingSampler(5, seed=7), 10)
    assert stream == expected
    assert sorted(stream[:5]) == [0, 1, 2, 3, 4] and sorted(stream[5:]) == [0, 1, 2, 3, 4]  # epochs
    assert take(TrainingSampler(5, seed=7), 10) == stream  # deterministic
    assert take(TrainingSampler(5, seed=8), 10) != stream
    assert take(TrainingSampler(3, shuffle=False, seed=0), 7) == [0, 1, 2, 0, 1, 2, 0]


def test_training_sampler_start_index_and_ranks(as_rank):
    full = take(TrainingSampler(7, seed=3), 40)
    assert take(TrainingSampler(7, seed=3, start_index=5), 35) == full[5:]
    as_rank(0, 2)
    assert take(TrainingSampler(7, seed=3), 20) == full[0::2]
    as_rank(1, 2)
    assert take(TrainingSampler(7, seed=3), 20) == full[1::2]
    # start_index counts this rank's items: rank 1 resumes at its 3rd item, global position 7.
    assert take(TrainingSampler(7, seed=3, start_index=3), 10) == full[7::2][:10]


def test_training_sampler_seed_none_is_shared(monkeypatch):
    monkeypatch.setattr(comm, "shared_random_seed", lambda: 7)
    assert take(TrainingSampler(5), 10) == take(TrainingSampler(5, seed=7), 10)
    with pytest.raises(ValueError, match="size > 0"):
        TrainingSampler(0, seed=0)


# ---------------------------------------------------------------------- repeat factors
def dataset(*cats_per_image):
    return [{"annotations": [{"category_id": c} for c in cats]} for cats in cats_per_image]


def test_repeat_factors_by_hand():
    # f(A=0) = 4/4, f(B=1) = 1/4, f(C=2) = 2/4 (C twice in image 2 counts once).
    dicts = dataset([0, 1], [0, 2], [0, 2, 2], [0])
    # t = 0.5: r(A) = max(1, sqrt(0.5)) = 1, r(B) = sqrt(0.5 / 0.25) = sqrt(2), r(C) = sqrt(1) = 1.
    torch.testing.assert_close(repeat_factors_from_category_frequency(dicts, 0.5),
                               torch.tensor([math.sqrt(2), 1.0, 1.0, 1.0]))
    # t = 1: r(B) = 2, r(C) = sqrt(2); an image takes the max over its categories.
    torch.testing.assert_close(repeat_factors_from_category_frequency(dicts, 1.0),
                               torch.tensor([2.0, math.sqrt(2), math.sqrt(2), 1.0]))
    # An image without annotations gets 1; t = 0 disables repeating.
    torch.testing.assert_close(repeat_factors_from_category_frequency(dataset([0], []), 0.0), torch.tensor([1.0, 1.0]))


class GivenFactors(RepeatFactorTrainingSampler):
    """The repeat-factor sampler with factors given by hand (a subclass overrides repeat_factors)."""

    def __init__(self, factors, seed=None, start_index=0, *, shuffle=True):
        self.factors = torch.as_tensor(factors)
        super().__init__([{}] * len(self.factors), seed, start_index, repeat_thresh=0.0, shuffle=shuffle)

    def repeat_factors(self, dataset_dicts):
        return self.factors


def test_repeat_factor_sampler_integer_and_fractional():
    s = GivenFactors([2.0, 0.0, 1.0], shuffle=False, seed=0)
    assert take(s, 9) == [0, 0, 2] * 3
    shuffled = take(GivenFactors([2.0, 0.0, 1.0], seed=0), 30)
    assert all(sorted(shuffled[i:i + 3]) == [0, 0, 2] for i in range(0, 30, 3))

    # Factor 1.5 for 400 images: each appears once or twice per epoch (drawn anew each epoch), so an
    # unshuffled epoch is 0..399 with about half of them doubled: 600 +- 10 (one std) items.
    stream = take(GivenFactors(torch.full((400,), 1.5), shuffle=False, seed=0), 1300)
    ends = [i for i in range(1, len(stream)) if stream[i] < stream[i - 1]]  # where a new epoch starts
    first, second = stream[:ends[0]], stream[ends[0]:ends[1]]
    for epoch in (first, second):
        counts = torch.bincount(torch.tensor(epoch), minlength=400)
        assert set(counts.tolist()) == {1, 2}
        assert abs(len(epoch) - 600) < 40
    assert first != second
    # Resume: the same start_index semantics as TrainingSampler.
    s = GivenFactors([1.5, 1.0, 0.3], seed=4)
    assert take(GivenFactors([1.5, 1.0, 0.3], seed=4, start_index=6), 20) == take(s, 26)[6:]
    with pytest.raises(ValueError, match="not all 0"):
        GivenFactors([0.0, 0.0], seed=0)


def test_repeat_factor_sampler_from_the_category_frequencies():
    # As test_repeat_factors_by_hand with t = 1: factors [2, sqrt(2), sqrt(2), 1]. Unshuffled, image 0
    # is in every epoch twice, images 1 and 2 once or twice (p = sqrt(2) - 1), image 3 once.
    dicts = dataset([0, 1], [0, 2], [0, 2, 2], [0])
    sampler = RepeatFactorTrainingSampler(dicts, 0, repeat_thresh=1.0, shuffle=False)
    torch.testing.assert_close(sampler.int_part + sampler.frac_part, torch.tensor([2.0, math.sqrt(2), math.sqrt(2), 1.0]))
    epoch = take(sampler, 4)
    assert epoch[:2] == [0, 0] and epoch.count(3) <= 1


def test_training_samplers_are_registered_components():
    from framework.registry import TRAIN_SAMPLERS

    assert TRAIN_SAMPLERS.get("TrainingSampler") is TrainingSampler
    offered = {"size": 4, "dataset_dicts": dataset([0], [1], [1], [1]), "seed": 3}
    plain = TRAIN_SAMPLERS.build({"name": "TrainingSampler", "shuffle": False}, offered=offered)
    assert take(plain, 5) == [0, 1, 2, 3, 0]
    repeat = TRAIN_SAMPLERS.build({"name": "RepeatFactorTrainingSampler", "repeat_thresh": 0.0}, offered=offered)
    # t = 0: every factor 1; an epoch draws the 4 rounding numbers, then its permutation.
    g = torch.Generator().manual_seed(3)
    expected = [i for _ in range(2) for i in (torch.rand(4, generator=g), torch.randperm(4, generator=g))[1].tolist()]
    assert take(repeat, 8) == expected


# ---------------------------------------------------------------------- batches and aspect-ratio grouping
def test_aspect_ratio_grouping():
    # (h, w) of dataset indices 0..6:  L P L L P P L  (the square image 4 counts as portrait)
    sizes = [(10, 20), (20, 10), (10, 30), (5, 6), (30, 30), (40, 10), (1, 2)]
    landscape = [w > h for h, w in sizes]
    batches = TrainingBatchSampler(TrainingSampler(7, shuffle=False, seed=0), 2, landscape=landscape)
    # Buckets fill in stream order; batches are (global position, index) pairs; the last portrait (5) waits
    # until the second epoch brings portrait 1.
    assert list(itertools.islice(batches, 4)) == [[(0, 0), (2, 2)], [(1, 1), (4, 4)], [(3, 3), (6, 6)], [(5, 5), (8, 1)]]


def test_batches_without_grouping_and_rank_positions(as_rank):
    batches = TrainingBatchSampler(TrainingSampler(5, shuffle=False, seed=0), 2)
    assert list(itertools.islice(batches, 3)) == [[(0, 0), (1, 1)], [(2, 2), (3, 3)], [(4, 4), (5, 0)]]
    as_rank(1, 2)
    rank1 = TrainingBatchSampler(TrainingSampler(5, shuffle=False, seed=0), 2)
    assert list(itertools.islice(rank1, 2)) == [[(1, 1), (3, 3)], [(5, 0), (7, 2)]]  # odd positions


def test_resumed_batches_continue_the_grouping_exactly():
    """Resuming at batch k yields batch k of the uninterrupted run, even with images waiting in a bucket."""
    landscape = [i % 3 != 0 for i in range(11)]
    full = list(itertools.islice(TrainingBatchSampler(TrainingSampler(11, seed=3), 3, landscape=landscape), 30))
    for k in (1, 5, 17):
        resumed = TrainingBatchSampler(TrainingSampler(11, seed=3), 3, landscape=landscape, start_batch=k)
        assert list(itertools.islice(resumed, 30 - k)) == full[k:]
    with pytest.raises(ValueError, match="start_batch"):
        TrainingBatchSampler(TrainingSampler(11, seed=3), 3, start_batch=-1)
