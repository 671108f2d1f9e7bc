"""Start the processes of a run and join them in one ``torch.distributed`` process group.

Every way in ends the same: each rank calls ``main_func(*args)`` inside an initialised default
process group, with **rank 0's** ``args`` (so a config composed separately by each process, as
under torchrun, cannot differ between ranks: rank 0's is used everywhere).

* ``torchrun --nproc_per_node=N ... tools/train_net.py ...`` (one or many machines): torchrun
  starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``; :func:`launch` joins them with ``init_method="env://"``.
* SLURM through ``hydra/launcher=slurm`` (submitit): each task exports submitit's view of the job
  (:class:`submitit.helpers.TorchDistributedEnvironment`) as the same variables, then as torchrun.
* ``dist.num_procs=N`` on one machine, without torchrun: this process becomes rank 0 and spawns
  ranks 1..N-1 (``torch.multiprocessing``, spawn method) that meet it on a free local port. Rank 0
  staying in the calling process keeps Hydra's context (sweeps, callbacks) and the return value.
* one process: ``main_func(*args)`` is called directly, without a process group.

Backends: ``gloo`` for CPU runs, ``nccl`` for CUDA (``backend="auto"`` picks by ``device_type``);
with CUDA each rank uses ``cuda:<LOCAL_RANK>``. CPU ranks divide the machine's cores between them
(``torch.set_num_threads``) unless ``OMP_NUM_THREADS`` says otherwise. oneDNN's primitive cache is
enlarged first (:func:`framework.utils.onednn.enlarge_primitive_cache`).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from typing import Any, Callable, Literal, Optional

import torch
import torch.distributed as dist

from framework.errors import ConfigError, InputError
from framework.registry import config_section
from framework.utils import comm
from framework.utils.onednn import enlarge_primitive_cache

__all__ = ["launch", "distributed_env", "DistributedEnv"]

logger = logging.getLogger(__name__)

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedEnv(dict):
    """The distributed variables of this process (``RANK``, ``WORLD_SIZE``, ...) and who set them."""

    source: str = ""


def distributed_env() -> Optional[DistributedEnv]:
    """The process-group environment set up outside this process: by torchrun, or a submitit
    job's of several tasks (exported as torchrun's variables); ``None`` when there is none."""
    if comm.submitit_job_id() is not None:
        import submitit
        from submitit.helpers import TorchDistributedEnvironment

        if submitit.JobEnvironment().num_tasks > 1:
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            env = DistributedEnv({k: os.environ[k] for k in _ENV_KEYS})
            env.source = "submitit"
            return env
    if all(k in os.environ for k in _ENV_KEYS):
        env = DistributedEnv({k: os.environ[k] for k in _ENV_KEYS})
        env.source = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "environment"
        return env
    return None


def _resolve_backend(backend: str, device_type: str) -> str:
    if backend == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and device_type != "cuda":
        raise ConfigError(f"config path 'dist.backend': nccl needs CUDA devices, but the run uses {device_type!r}; "
                          "use dist.backend=gloo (or auto)")
    return backend


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init(backend: str, init_method: str, *, rank: int, world_size: int, local_rank: int, timeout_s: float) -> None:
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank} has LOCAL_RANK={local_rank} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s): start at most that many processes per machine")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        # CPU processes sharing a machine share its cores: N processes each running a thread per
        # core spin against each other (several times slower than one process).
        on_this_machine = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        _threads_before.append(torch.get_num_threads())
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // on_this_machine))


#: The thread count before :func:`_init` divided the cores (restored by :func:`_shutdown`, for the
#: launching process, which goes on after the run).
_threads_before: list[int] = []


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    comm.forget_groups()
    if _threads_before:
        torch.set_num_threads(_threads_before.pop())


def _run_rank(main_func: Callable[..., Any], args: tuple) -> Any:
    return main_func(*comm.broadcast(args, src=0))


def _spawned_rank(index: int, main_func: Callable[..., Any], args: tuple, world_size: int, backend: str,
                  init_method: str, timeout_s: float) -> None:
    """Body of rank ``index + 1`` started by :func:`launch` (rank 0 is the launching process)."""
    rank = index + 1
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size))
    _init(backend, init_method, rank=rank, world_size=world_size, local_rank=rank, timeout_s=timeout_s)
    try:
        _run_rank(main_func, args)
    finally:
        _shutdown()


@config_section("dist")
def launch(
    main_func: Callable[..., Any],
    args: tuple = (),
    device_type: str = "cpu",
    /,
    *,
    num_procs: int = 1,
    backend: Literal["auto", "gloo", "nccl"] = "auto",
    timeout_s: float = 1800.0,
) -> Any:
    """Run ``main_func(*args)`` on every rank of a process group (see the module docstring).

    Args:
        main_func, args: what each rank runs; ``args`` must pickle (they travel to spawned ranks
            and, under torchrun, from rank 0 to the others), and ``main_func`` must be importable
            by name (a module-level function), since spawned ranks import it.
        device_type: ``"cpu"`` or ``"cuda"``: the device of the run (it picks the backend and,
            for CUDA, one device per local rank).
        num_procs: processes to spawn on this machine when no torchrun/SLURM environment is
            present (1: no process group). Under torchrun it must stay 1: torchrun's
            ``--nproc_per_node`` says how many.
        backend: ``auto`` (gloo on CPU, nccl on CUDA), ``gloo`` or ``nccl``.
        timeout_s: how long a collective waits for the other ranks before failing.

    Returns:
        what ``main_func`` returned on rank 0 (on the other ranks: theirs).
    """
    if num_procs < 1:
        raise ConfigError(f"config path 'dist.num_procs': must be >= 1, got {num_procs}")
    enlarge_primitive_cache()  # before the run's first convolution; spawned ranks inherit it
    if dist.is_initialized():  # already inside a group (e.g. launch called from a launched function)
        return main_func(*args)
    backend = _resolve_backend(backend, device_type)
    env = distributed_env()
    if env is not None:
        if num_procs != 1:
            raise ConfigError(f"config path 'dist.num_procs': {num_procs} processes were requested, but this process is "
                              f"one of {env['WORLD_SIZE']} started by {env.source}; leave dist.num_procs=1 there "
                              "(torchrun --nproc_per_node / the SLURM preset say how many)")
        if int(env["WORLD_SIZE"]) == 1:
            return main_func(*args)
        _init(backend, "env://", rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
              local_rank=int(env["LOCAL_RANK"]), timeout_s=timeout_s)
        logger.info(f"Joined a process group of {env['WORLD_SIZE']} ({env.source}, {backend}) as rank {env['RANK']}")
        try:
            return _run_rank(main_func, args)
        finally:
            _shutdown()
    if num_procs == 1:
        return main_func(*args)
    if device_type == "cuda" and num_procs > torch.cuda.device_count():
        raise ConfigError(f"config path 'dist.num_procs': {num_procs} processes need as many CUDA devices, this "
                          f"machine has {torch.cuda.device_count()}")
    return _spawn(main_func, args, num_procs=num_procs, backend=backend, timeout_s=timeout_s)


def _spawn(main_func: Callable[..., Any], args: tuple, *, num_procs: int, backend: str, timeout_s: float) -> Any:
    import torch.multiprocessing as mp

    init_method = f"tcp://127.0.0.1:{_free_port()}"
    logger.info(f"Starting {num_procs} processes ({backend}) on this machine, rank 0 in this one")
    children = mp.start_processes(_spawned_rank, args=(main_func, args, num_procs, backend, init_method, timeout_s),
                                  nprocs=num_procs - 1, join=False, start_method="spawn")
    saved = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE=str(num_procs), LOCAL_WORLD_SIZE=str(num_procs))
    try:
        _init(backend, init_method, rank=0, world_size=num_procs, local_rank=0, timeout_s=timeout_s)
        try:
            result = _run_rank(main_func, args)
        finally:
            _shutdown()
        while not children.join():
            pass
        return result
    except BaseException as error:
        # A rank that failed makes the others fail in their next collective: report its error, not
        # theirs; unless this rank's own error is a user-facing one (bad input: every rank has it).
        failure = _child_failure(children)
        for p in children.processes:
            if p.is_alive():
                p.terminate()
        if failure is not None and not isinstance(error, InputError):
            raise failure from error
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _child_failure(children: Any) -> Optional[BaseException]:
    """The error of a spawned rank that failed (waiting a few seconds for one to report), if any."""
    import torch.multiprocessing as mp

    try:
        for _ in range(10):
            if children.join(timeout=0.5):
                return None
    except mp.ProcessRaisedException as e:
        return e
    except mp.ProcessExitedException as e:
        return e
    return None
