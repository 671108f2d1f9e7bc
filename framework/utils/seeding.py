"""Seeds: one function to derive a seed from several integers, and ones to seed the global generators.

Reproducibility in this framework never relies on a random stream surviving from one place to
another: each unit of random work (an item the data loader maps, a training step of one rank) seeds
Python's ``random``, numpy's and torch's global generators from a seed derived from what identifies
it, e.g. ``derive_seed(seed, rank, iteration)``. Results then depend neither on the number of data
workers nor on what ran in between (an evaluation, a resume from a checkpoint).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["derive_seed", "seed_global_rngs", "seeded_global_rngs", "seed_everything"]


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed mixing ``entropy`` (well spread even for consecutive inputs, e.g. iterations)."""
    return int(np.random.SeedSequence([int(e) % 2**64 for e in entropy]).generate_state(1)[0])


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
