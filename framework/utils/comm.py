"""Distributed helpers that also work, as no-ops, in a single process without ``torch.distributed``.

Every function here is safe to call whether or not a process group was initialised: with none (or a
world of one process) ``all_gather(x)`` is ``[x]``, ``synchronize()`` returns at once, and so on. Object
collectives pickle arbitrary Python objects; they go through a CPU (gloo) group so that gathering, say,
evaluation predictions does not use GPU memory when the main backend is NCCL.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "broadcast",
    "forget_groups",
    "broadcast_buffers",
    "shared_random_seed",
    "submitit_job_id",
    "reduce_dict",
]


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if _is_distributed() else 1


def get_rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if _is_distributed() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine, from ``LOCAL_RANK`` (set by torchrun / our launcher); 0 if unset."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0: the process that logs, writes files and returns evaluation results."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; returns immediately when not distributed."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        # Naming the device avoids NCCL guessing one (and warning, or hanging on a wrong guess).
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache(maxsize=None)
def _cpu_group() -> Any:
    """A gloo group over all ranks for pickled-object collectives (``None``, the default group, if it is gloo).

    Cached: creating a group is itself a collective, done once, lazily, by every rank in the same call.
    """
    if dist.get_backend() == dist.Backend.GLOO:
        return None
    return dist.new_group(backend="gloo")


def all_gather(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank, on every rank.

    Returns:
        list of length world_size: item ``r`` is the object given by rank ``r`` (``[obj]`` when not
        distributed).
    """
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def gather(obj: Any, dst: int = 0) -> list[Any]:
    """Gather a picklable object from every rank onto rank ``dst``.

    Returns:
        on rank ``dst``: the list of all ranks' objects, ordered by rank; on other ranks: ``[]``
        (so callers can ``chain`` the result unconditionally). Not distributed: ``[obj]``.
    """
    if get_world_size() == 1:
        return [obj]
    group = _cpu_group()
    if get_rank() == dst:
        out: list[Any] = [None] * get_world_size()
        dist.gather_object(obj, out, dst=dst, group=group)
        return out
    dist.gather_object(obj, None, dst=dst, group=group)
    return []


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable object, on every rank (``obj`` itself when not distributed)."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_cpu_group())
    return box[0]


def forget_groups() -> None:
    """Drop the cached helper groups: call after ``destroy_process_group`` (a new group needs new ones)."""
    _cpu_group.cache_clear()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) into ``module`` on every rank.

    With ``broadcast_buffers=False`` in DDP each rank's BatchNorm statistics drift apart; doing this
    before an evaluation makes every rank evaluate the model that rank ``src`` checkpoints.
    """
    if get_world_size() == 1:
        return
    with torch.no_grad():
        for buf in module.buffers():
            dist.broadcast(buf, src=src)


def shared_random_seed() -> int:
    """A random int in [0, 2**31) that is the same on all ranks (rank 0's draw).

    Draws from numpy's global generator on every rank, so it advances that state like any other draw;
    use it where all workers must agree on a seed (e.g. a shared data-sampling order).
    """
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def reduce_dict(values: dict[str, torch.Tensor], *, average: bool = True) -> dict[str, torch.Tensor]:
    """Sum (or average) a dict of scalar tensors over all ranks; the result is meaningful on rank 0.

    Args:
        values: name -> 0-dim tensor, with the same keys on every rank (e.g. the loss dict).
        average: divide the sum by the world size.

    Returns:
        a dict with the same keys, the reduced 0-dim tensors (the input itself when not distributed).
    """
    world_size = get_world_size()
    if world_size == 1:
        return values
    with torch.no_grad():
        names = sorted(values)  # every rank must stack in the same order
        stacked = torch.stack([values[k] for k in names])
        dist.reduce(stacked, dst=0)
        if get_rank() == 0 and average:
            stacked /= world_size
        return dict(zip(names, stacked))


def submitit_job_id() -> str | None:
    """The id of the submitit job (SLURM or local executor) this process is a task of, else ``None``."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return str(submitit.JobEnvironment().job_id)
