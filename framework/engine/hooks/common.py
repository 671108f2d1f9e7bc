"""Hooks every run wants: iteration timing, LR scheduling, periodic writing of metrics."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Sequence
from typing import Any, Optional

import torch

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop
from framework.errors import ConfigError

__all__ = ["IterationTimer", "LRScheduler", "PeriodicWriter"]

logger = logging.getLogger(__name__)


@HOOKS.register()
class IterationTimer(Hook):
    """Put the seconds of each step as scalar ``time``; log the total training time at the end.

    A step is timed from this hook's ``before_step`` to its ``after_step``: with the highest
    priority that spans the step and the (cheap) ``before_step`` of other hooks, but not their
    ``after_step`` (checkpointing, evaluation). The first ``warmup_iter`` steps (CUDA/cudnn warm-up,
    data loader start) are excluded from both ``time`` and the speed summary.
    """

    priority = Priority.HIGHEST

    def __init__(self, *, warmup_iter: int = 3) -> None:
        self.warmup_iter = warmup_iter
        self.total_time = 0.0  # seconds of the whole train() call, set in after_train

    def before_train(self, loop: TrainLoop) -> None:
        self._train_start = time.perf_counter()
        self._timed_start = self._train_start  # moved past the warm-up steps
        self._timed_seconds = 0.0  # time spent inside steps after warm-up

    def before_step(self, loop: TrainLoop) -> None:
        self._step_start = time.perf_counter()

    def after_step(self, loop: TrainLoop) -> None:
        now = time.perf_counter()
        iter_done = loop.iter - loop.start_iter + 1
        if iter_done >= self.warmup_iter:
            seconds = now - self._step_start
            self._timed_seconds += seconds
            loop.storage.put_scalars(time=seconds)
        else:
            self._timed_start = now

    def after_train(self, loop: TrainLoop) -> None:
        now = time.perf_counter()
        self.total_time = now - self._train_start
        timed_iters = loop.iter - loop.start_iter - self.warmup_iter + 1
        if timed_iters > 0 and self._timed_seconds > 0:
            logger.info(
                f"Overall training speed: {timed_iters} iterations in "
                f"{datetime.timedelta(seconds=int(self._timed_seconds))} ({self._timed_seconds / timed_iters:.4f} s / it)"
            )
        hook_seconds = (now - self._timed_start) - self._timed_seconds
        logger.info(
            f"Total training time: {datetime.timedelta(seconds=int(self.total_time))} "
            f"({datetime.timedelta(seconds=int(max(hook_seconds, 0)))} in hooks after the steps)"
        )


@HOOKS.register()
class LRScheduler(Hook):
    """After each step: put the learning rate used by the step as scalar ``lr``, then step
    ``scheduler`` (if any) so the next iteration uses the next value.

    The reported ``lr`` is that of the param group with the most parameters (groups may differ,
    e.g. by a bias lr factor).

    Args:
        optimizer: the optimizer whose learning rate is reported.
        scheduler: stepped once per iteration; ``None`` keeps the learning rate constant.
    """

    priority = Priority.HIGH

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Optional[Any] = None) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        groups = optimizer.param_groups
        sizes = [sum(p.numel() for p in g["params"]) for g in groups]
        self._group = max(range(len(groups)), key=lambda i: (sizes[i], -i)) if groups else 0

    def after_step(self, loop: TrainLoop) -> None:
        lr = self.optimizer.param_groups[self._group]["lr"]
        loop.storage.put_scalar("lr", lr, smoothing_hint=False)
        if self.scheduler is not None:
            self.scheduler.step()


@HOOKS.register()
class PeriodicWriter(Hook):
    """Call ``write()`` of every writer every ``period`` steps and at the last step; at the end
    write once more.

    Images, histograms, texts and PR curves left in the storage after the writers ran are dropped, so they do
    not pile up when no writer consumes them.

    Args:
        writers: the run's event writers (none on processes other than the main one).
    """

    priority = Priority.LOWEST  # after evaluation, so metrics of this step are written with it

    def __init__(self, writers: Sequence[Any], *, period: int = 20) -> None:
        if period < 1:
            raise ConfigError(f"PeriodicWriter(period={period}): period must be >= 1")
        self.writers = list(writers)
        self.period = period

    def _write(self, loop: TrainLoop) -> None:
        for writer in self.writers:
            writer.write()
        loop.storage.clear_images()
        loop.storage.clear_histograms()
        loop.storage.clear_texts()
        loop.storage.clear_pr_curves()

    def after_step(self, loop: TrainLoop) -> None:
        if (loop.iter + 1) % self.period == 0 or loop.iter == loop.max_iter - 1:
            self._write(loop)

    def after_train(self, loop: TrainLoop) -> None:
        # Not closed here: whoever made the writers closes them (the run still logs its final
        # metrics and hyper-parameters through them after training).
        self._write(loop)
