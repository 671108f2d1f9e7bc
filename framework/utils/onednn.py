"""oneDNN's primitive cache, sized for a detector's many input shapes.

oneDNN (torch's CPU convolutions) compiles a kernel, a "primitive", for every convolution shape it
meets, forward and backward, and keeps the last ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` of them (1024 by
default). A detector trained on images of several sizes meets far more: the default job's batches
come in dozens of padded sizes and its mask head sees a new number of RoIs at every step, each
shape needing a few primitives for each of its ~50 convolutions. With 1024 the cache keeps evicting
what the next batch of a size seen before needs, and the step pays for compiling them again (about
0.35 ms a primitive on a 2-core AMD EPYC). :func:`enlarge_primitive_cache` raises the capacity to
:data:`PRIMITIVE_CACHE_CAPACITY` (docs/benchmarks.md has the measurement).
"""

from __future__ import annotations

import os

__all__ = ["PRIMITIVE_CACHE_CAPACITY", "enlarge_primitive_cache"]

#: Primitives kept by :func:`enlarge_primitive_cache`: more than the default job creates in 600 steps.
PRIMITIVE_CACHE_CAPACITY = 8192

_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def enlarge_primitive_cache(capacity: int = PRIMITIVE_CACHE_CAPACITY) -> bool:
    """Set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` to ``capacity`` unless it is set already (the user's
    value wins). oneDNN reads the variable once, when the process creates its first primitive (its
    first CPU convolution), so this takes effect only when called before that; the entry points
    (``launch``, ``Predictor``, ``tools/benchmark.py``) call it first thing. Processes started
    afterwards (DataLoader workers, spawned ranks) inherit it.

    Returns:
        whether the variable was set by this call.
    """
    if _VARIABLE in os.environ:
        return False
    os.environ[_VARIABLE] = str(int(capacity))
    return True
