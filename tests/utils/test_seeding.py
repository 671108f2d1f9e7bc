"""derive_seed: one seed per distinct sequence, and a distinct stream per use."""

import itertools

from framework.utils.seeding import SeedStream, derive_seed


def test_sequences_that_numpy_would_pad_alike_get_different_seeds():
    # numpy's SeedSequence pads its entropy with zeros: [a, b] and [a, b, 0] seeded alike.
    assert derive_seed(7, 3) != derive_seed(7, 3, 0)
    assert len({derive_seed(7), derive_seed(7, 0), derive_seed(7, 0, 0)}) == 3
    # A value of more than 32 bits is not two values of 32 bits.
    assert derive_seed(2**32 + 5) != derive_seed(5, 1)


def test_derived_seeds_are_deterministic_32_bit_and_distinct_over_a_grid():
    seeds = [derive_seed(seed, stream, a, b) for seed, stream, a, b
             in itertools.product(range(3), SeedStream, range(4), range(4))]
    assert seeds == [derive_seed(seed, stream, a, b) for seed, stream, a, b
                     in itertools.product(range(3), SeedStream, range(4), range(4))]
    assert all(0 <= s < 2**32 for s in seeds)
    assert len(set(seeds)) == len(seeds)


def test_the_step_of_a_rank_and_the_sample_or_worker_of_the_same_numbers_differ():
    # The collisions the streams are there for: training step (rank 0, iteration 0) vs the first
    # sample's augmentations, and step (rank r, iteration i) vs data worker i of rank r.
    assert derive_seed(42, SeedStream.TRAIN_STEP, 0, 0) != derive_seed(42, SeedStream.TRAIN_SAMPLE, 0)
    assert derive_seed(42, SeedStream.TRAIN_STEP, 1, 2) != derive_seed(42, SeedStream.LOADER_WORKER, 1, 2)
    assert derive_seed(42, SeedStream.TRAIN_SAMPLE, 5) != derive_seed(42, SeedStream.TRAIN_DRAWS, 5)
