"""Measuring speed and memory fairly: alternating timed runs, medians after warm-up, peak memory.

Used by tools/benchmark.py. Two implementations are compared by calling them in turn
(A, B, A, B, ...) in one process with the same threads, so drift of the machine (frequency,
another process) hits both alike, and the median of each side is reported.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional

import torch

__all__ = ["Timing", "compare_alternating", "peak_rss_mb", "reset_peak_rss", "sync"]


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued CUDA kernels, so a timer measures them and not only their launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(device)


def reset_peak_rss() -> bool:
    """Reset the process's peak resident set size (Linux: ``/proc/self/clear_refs``); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> Optional[float]:
    """Peak resident set size since the last :func:`reset_peak_rss` (Linux ``VmHWM``), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if sys.platform != "win32":
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024 / 1024
    return None


@dataclasses.dataclass
class Timing:
    """Seconds of each timed run of one side, and its peak memory."""

    times: list[float]
    peak_rss_mb: Optional[float] = None
    peak_cuda_mb: Optional[float] = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "times_s": self.times, "peak_rss_mb": self.peak_rss_mb,
                "peak_cuda_mb": self.peak_cuda_mb}


def _run_once(fn: Callable[[], Any]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def compare_alternating(
    sides: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Time each side ``repeats`` times after ``warmup`` untimed runs, in turns.

    The peak RSS of a side is the highest peak over its own runs, each measured from a reset just
    before it (so the other side's allocations are not counted); the peak CUDA memory likewise.

    Returns:
        ``{side: Timing}`` in the order of ``sides``.
    """
    out = {name: Timing(times=[]) for name in sides}
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    for _ in range(repeats):
        for name, fn in sides.items():
            gc.collect()
            rss_ok = reset_peak_rss()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.reset_peak_memory_stats()
            out[name].times.append(_run_once(fn))
            if rss_ok:
                peak = peak_rss_mb()
                out[name].peak_rss_mb = max(out[name].peak_rss_mb or 0.0, peak or 0.0)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                cuda = torch.cuda.max_memory_allocated() / 1024 / 1024
                out[name].peak_cuda_mb = max(out[name].peak_cuda_mb or 0.0, cuda)
    return out
