"""Seeds: one function to derive a seed from several integers, and ones to seed the global generators.

Reproducibility in this framework never relies on a random stream surviving from one place to
another: each unit of random work (an item the data loader maps, a training step of one rank) seeds
Python's ``random``, numpy's and torch's global generators from a seed derived from what identifies
it, e.g. ``derive_seed(seed, rank, iteration)``. Results then depend neither on the number of data
workers nor on what ran in between (an evaluation, a resume from a checkpoint).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_global_rngs", "seed_everything"]


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


def seed_everything(seed: int) -> None:
    """Seed every global generator (CPU and CUDA): the start of a run, before the model is built."""
    seed_global_rngs(seed, cuda=True)
