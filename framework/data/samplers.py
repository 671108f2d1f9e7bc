"""Samplers (which dataset indices each rank reads) and batching with aspect-ratio grouping, as in detectron2.

Training samplers yield an *infinite* stream of indices: training length is counted in
iterations, not epochs. The stream is one seeded sequence shared by all ranks; rank ``r`` of ``W``
takes its items ``r, r + W, r + 2W, ...``, so ranks see disjoint samples without communicating.
``start_index`` skips the first items of this rank's share. :class:`TrainingBatchSampler` cuts a
rank's stream into batches (grouped by orientation when asked) and resumes at a given batch.

The training samplers are components of the ``TRAIN_SAMPLERS`` registry (``dataloader.train.sampler``).
A new one subclasses :class:`InfiniteSampler` and writes :meth:`~InfiniteSampler.infinite_indices`;
its runtime arguments are any of ``size``, ``dataset_dicts`` and ``seed`` (what
:func:`framework.data.build.build_train_loader` offers), its knobs keyword-only. Exact resume then
holds with no sampler state in the checkpoint: the stream is a function of the seed, and the
batch sampler replays it up to the iteration a run resumes at.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from torch.utils.data import Sampler

from framework.registry import TRAIN_SAMPLERS
from framework.utils import comm

__all__ = [
    "InfiniteSampler",
    "TrainingSampler",
    "RepeatFactorTrainingSampler",
    "repeat_factors_from_category_frequency",
    "InferenceSampler",
    "TrainingBatchSampler",
]


logger = logging.getLogger(__name__)


class InfiniteSampler(Sampler[int]):
    """Base of the training samplers: seed, rank slicing and ``start_index`` around
    :meth:`infinite_indices`, the one method a subclass writes.

    Args:
        seed: seed of the stream; None draws one shared by all ranks
            (:func:`framework.utils.comm.shared_random_seed`).
        start_index: skip that many items of this rank's stream.
    """

    def __init__(self, seed: Optional[int] = None, start_index: int = 0) -> None:
        super().__init__()
        if start_index < 0:
            raise ValueError(f"{type(self).__name__}: start_index must be >= 0, got {start_index}")
        # Every rank must draw the same permutations, so an unseeded run agrees on one seed.
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.start_index = int(start_index)
        self.rank = comm.get_rank()
        self.world_size = comm.get_world_size()

    def infinite_indices(self, generator: torch.Generator) -> Iterator[int]:
        """The global stream of dataset indices, every rank's items together, drawing all its
        randomness from ``generator`` (seeded with ``seed``), so that it is the same on every rank
        and in every run with this seed."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        first = self.start_index * self.world_size + self.rank
        return itertools.islice(self.infinite_indices(g), first, None, self.world_size)


@TRAIN_SAMPLERS.register()
class TrainingSampler(InfiniteSampler):
    """Infinite stream of indices in [0, size): epoch after epoch, each a fresh permutation.

    Args:
        size: number of samples of the dataset (> 0).
        seed, start_index: see :class:`InfiniteSampler`.
        shuffle: permute each epoch (else 0, 1, ..., size-1 repeatedly).

    Yields:
        ints: this rank's share of the stream (``rank::world_size``).
    """

    def __init__(self, size: int, seed: Optional[int] = None, start_index: int = 0, *, shuffle: bool = True) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"TrainingSampler needs a dataset of size > 0, got size={size!r}")
        super().__init__(seed, start_index)
        self.size = size
        self.shuffle = shuffle

    def infinite_indices(self, generator: torch.Generator) -> Iterator[int]:
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=generator).tolist()
            else:
                yield from range(self.size)


def repeat_factors_from_category_frequency(dataset_dicts: Sequence[dict[str, Any]], repeat_thresh: float) -> torch.Tensor:
    """Per-image repeat factors of LVIS's repeat-factor sampling (Gupta et al., 2019).

    With ``f(c)`` the fraction of images containing category ``c`` (crowd annotations included, as
    detectron2), the category factor is ``r(c) = max(1, sqrt(repeat_thresh / f(c)))`` and an image's
    factor is the max over the categories it contains (1 for an image without annotations).

    Returns:
        (N,) float32 tensor, one factor per dataset dict.
    """
    if repeat_thresh < 0:
        raise ValueError(f"repeat_thresh must be >= 0, got {repeat_thresh}")
    num_images = len(dataset_dicts)
    if num_images == 0:
        raise ValueError("repeat_factors_from_category_frequency got an empty dataset")
    image_cats = [{a["category_id"] for a in d.get("annotations", [])} for d in dataset_dicts]
    count: defaultdict[int, int] = defaultdict(int)
    for cats in image_cats:
        for c in cats:
            count[c] += 1
    cat_factor = {c: max(1.0, math.sqrt(repeat_thresh / (n / num_images))) for c, n in count.items()}
    return torch.tensor([max((cat_factor[c] for c in cats), default=1.0) for cats in image_cats], dtype=torch.float32)


@TRAIN_SAMPLERS.register()
class RepeatFactorTrainingSampler(InfiniteSampler):
    """Like :class:`TrainingSampler`, but image i appears about ``r_i`` times per epoch, ``r_i``
    its repeat factor (:meth:`repeat_factors`: LVIS's, from category frequencies).

    A factor r = k + p (integer part k, fraction p) repeats the image k times plus once more with
    probability p, drawn anew every epoch (stochastic rounding), so the expected count is r.

    Args:
        dataset_dicts: the training set (its annotations' ``category_id`` s give the factors).
        seed, start_index: see :class:`InfiniteSampler`.
        repeat_thresh: the ``t`` of :func:`repeat_factors_from_category_frequency`: categories in
            fewer than a fraction t of the images are oversampled (LVIS uses 0.001; 0 repeats nothing).
        shuffle: permute each epoch.
    """

    def __init__(self, dataset_dicts: Sequence[dict[str, Any]], seed: Optional[int] = None, start_index: int = 0, *,
                 repeat_thresh: float, shuffle: bool = True) -> None:
        self.repeat_thresh = repeat_thresh
        factors = torch.as_tensor(self.repeat_factors(dataset_dicts), dtype=torch.float32).reshape(-1)
        if len(factors) == 0 or (factors < 0).any() or not torch.isfinite(factors).all() or factors.sum() <= 0:
            raise ValueError(f"{type(self).__name__} needs a non-empty tensor of finite factors >= 0, not all 0, "
                             f"got {factors!r}")
        super().__init__(seed, start_index)
        logger.info("%s: %d images -> %.1f expected samples per epoch (repeat_thresh=%g)", type(self).__name__,
                    len(factors), float(factors.sum()), repeat_thresh)
        self.int_part = torch.trunc(factors)
        self.frac_part = factors - self.int_part
        self.shuffle = shuffle

    def repeat_factors(self, dataset_dicts: Sequence[dict[str, Any]]) -> torch.Tensor:
        """(N,) float factors >= 0, one per dataset dict: what a subclass overrides for another rule."""
        return repeat_factors_from_category_frequency(dataset_dicts, self.repeat_thresh)

    def _epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Dataset indices of one epoch, each repeated by its stochastically rounded factor."""
        rands = torch.rand(len(self.frac_part), generator=generator)
        reps = (self.int_part + (rands < self.frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(reps)), reps)

    def infinite_indices(self, generator: torch.Generator) -> Iterator[int]:
        while True:
            indices = self._epoch_indices(generator)
            if len(indices) == 0:  # every factor rounded down to 0 this epoch
                continue
            if self.shuffle:
                indices = indices[torch.randperm(len(indices), generator=generator)]
            yield from indices.tolist()


class InferenceSampler(Sampler[int]):
    """Every index of [0, size) exactly once over all ranks, in contiguous shards in rank order.

    The first ``size % world_size`` ranks get one extra index: size 10 over 3 ranks gives
    [0, 1, 2, 3], [4, 5, 6], [7, 8, 9], so gathering the results by rank restores dataset order.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"InferenceSampler needs a size >= 0, got {size!r}")
        self.size = size
        rank, world_size = comm.get_rank(), comm.get_world_size()
        shard, left = divmod(size, world_size)
        sizes = [shard + int(r < left) for r in range(world_size)]
        begin = sum(sizes[:rank])
        self.indices = range(begin, begin + sizes[rank])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TrainingBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's training batches, as lists of ``(global position, dataset index)``, optionally
    grouped by orientation, from the ``start_batch``-th on.

    Rank r of W reads items r, r + W, ... of the global stream: its k-th item sits at global
    position ``k * W + r`` (what the loader seeds that item's augmentation with). With grouping,
    items wait in their orientation's bucket (landscape: w > h; portrait: w <= h, as detectron2)
    until it holds ``batch_size``; batches come out in the order buckets fill.

    Resuming (``start_batch``) replays the stream from its start at the index level, without
    mapping anything, so the buckets hold exactly what they held when the interrupted run stopped
    (a few milliseconds per ten thousand batches).

    Args:
        sampler: an infinite training sampler (a :class:`InfiniteSampler`).
        batch_size: per-rank batch size.
        landscape: (N,) bool per dataset index (True: w > h) to group by orientation; None: no grouping.
        start_batch: the first batch to yield (the iteration a run resumes at).

    Yields:
        lists of ``batch_size`` ``(position, index)`` pairs, forever.
    """

    def __init__(self, sampler: InfiniteSampler, batch_size: int, *,
                 landscape: Optional[Sequence[bool]] = None, start_batch: int = 0) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"TrainingBatchSampler: batch_size must be > 0, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"TrainingBatchSampler: start_batch must be >= 0, got {start_batch}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.landscape = None if landscape is None else [bool(x) for x in landscape]
        self.start_batch = start_batch

    def _batches(self) -> Iterator[list[tuple[int, int]]]:
        s = self.sampler
        stream = ((k * s.world_size + s.rank, index) for k, index in enumerate(s, start=s.start_index))
        if self.landscape is None:
            while True:
                yield list(itertools.islice(stream, self.batch_size))
        buckets: tuple[list, list] = ([], [])
        for key in stream:
            bucket = buckets[0 if self.landscape[key[1]] else 1]
            bucket.append(key)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                bucket.clear()
                yield batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return itertools.islice(self._batches(), self.start_batch, None)
