"""Seeds: one function to derive a seed from several integers, and ones to seed the global generators.

Reproducibility in this framework never relies on a random stream surviving from one place to
another: each unit of random work (an item the data loader maps, a training step of one rank) seeds
Python's ``random``, numpy's and torch's global generators from a seed derived from what identifies
it and by what it is for, e.g. ``derive_seed(seed, SeedStream.TRAIN_STEP, rank, iteration)``. Results
then depend neither on the number of data workers nor on what ran in between (an evaluation, a
resume from a checkpoint), and no two units share a seed: every use names its own
:class:`SeedStream`, and :func:`derive_seed` gives different seeds to different sequences.
"""

from __future__ import annotations

import contextlib
import enum
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["SeedStream", "derive_seed", "seed_global_rngs", "seeded_global_rngs", "seed_everything"]


class SeedStream(enum.IntEnum):
    """What a derived seed is for, passed to :func:`derive_seed` after the run's seed: without it the
    seed of training step ``i`` of rank ``r`` would be the seed of data worker ``i`` of rank ``r``."""

    TRAIN_STEP = 1  #: (rank, iteration): the global generators of one training step
    TRAIN_SAMPLE = 2  #: (position,): the augmentations of the sample at that position of the sample stream
    TRAIN_DRAWS = 3  #: (position,): the other samples a mixing augmentation draws for that sample
    LOADER_WORKER = 4  #: (rank, worker id): anything else a data-loader worker draws
    TEST_IMAGE = 5  #: (dataset index,): the test pipeline of one image


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed mixing the integers ``entropy`` (well spread even for consecutive inputs, e.g.
    iterations). Different sequences give different seeds, also when one is the other with zeros
    appended (numpy's SeedSequence alone pads with zeros) or when a value needs more than 32 bits:
    each value enters as two 32-bit words, followed by the number of values."""
    words = []
    for e in entropy:
        e = int(e) % 2**64
        words += [e & 0xFFFFFFFF, e >> 32]
    return int(np.random.SeedSequence(np.array([*words, len(entropy)], dtype=np.uint32)).generate_state(1)[0])


def seed_global_rngs(seed: int, *, cuda: bool = False) -> None:
    """Seed Python's, numpy's and torch's CPU generators with ``seed`` (and every CUDA device's with ``cuda``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if cuda:
        torch.manual_seed(seed)  # CPU and all CUDA devices
    else:
        torch.default_generator.manual_seed(seed)  # leaves CUDA generators alone


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's CPU generators with ``seed`` for the ``with`` block, and
    restore their states on exit: the caller's random streams stay untouched (e.g. a data loader
    mapping its items in the main process)."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_global_rngs(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def seed_everything(seed: int) -> None:
    """Seed every global generator (CPU and CUDA): the start of a run, before the model is built."""
    seed_global_rngs(seed, cuda=True)
