"""Hooks every run wants: iteration timing, LR scheduling, periodic writing of metrics."""

from __future__ import annotations

import datetime
import logging
import time

from framework.engine.hooks.base import HOOKS, Hook, Priority
from framework.errors import ConfigError

__all__ = ["IterationTimer", "LRScheduler", "PeriodicWriter"]

logger = logging.getLogger(__name__)


@HOOKS.register()
class IterationTimer(Hook):
    """Put the seconds of each step as scalar ``time``; log the total training time at the end.

    A step is timed from this hook's ``before_step`` to its ``after_step``: with the highest
    priority that spans ``run_step`` and the (cheap) ``before_step`` of other hooks, but not their
    ``after_step`` (checkpointing, evaluation). The first ``warmup_iter`` steps (CUDA/cudnn warm-up,
    data loader start) are excluded from both ``time`` and the speed summary.
    """

    priority = Priority.HIGHEST

    def __init__(self, *, warmup_iter: int = 3) -> None:
        self.warmup_iter = warmup_iter
        self.total_time = 0.0  # seconds of the whole train() call, set in after_train

    def before_train(self) -> None:
        self._train_start = time.perf_counter()
        self._timed_start = self._train_start  # moved past the warm-up steps
        self._timed_seconds = 0.0  # time spent inside steps after warm-up

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        now = time.perf_counter()
        iter_done = self.trainer.iter - self.trainer.start_iter + 1
        if iter_done >= self.warmup_iter:
            seconds = now - self._step_start
            self._timed_seconds += seconds
            self.trainer.storage.put_scalars(time=seconds)
        else:
            self._timed_start = now

    def after_train(self) -> None:
        now = time.perf_counter()
        self.total_time = now - self._train_start
        timed_iters = self.trainer.iter - self.trainer.start_iter - self.warmup_iter + 1
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
    ``trainer.scheduler`` (if any) so the next iteration uses the next value.

    The reported ``lr`` is that of the param group with the most parameters (groups may differ,
    e.g. by a bias lr factor).
    """

    priority = Priority.HIGH

    def __init__(self) -> None:
        self._group = 0

    def before_train(self) -> None:
        groups = self.trainer.optimizer.param_groups
        sizes = [sum(p.numel() for p in g["params"]) for g in groups]
        self._group = max(range(len(groups)), key=lambda i: (sizes[i], -i)) if groups else 0

    def after_step(self) -> None:
        lr = self.trainer.optimizer.param_groups[self._group]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        if self.trainer.scheduler is not None:
            self.trainer.scheduler.step()


@HOOKS.register()
class PeriodicWriter(Hook):
    """Call ``write()`` of every writer given to the trainer every ``period`` steps and at the last
    step; at the end write once more.

    Images, histograms and texts left in the storage after the writers ran are dropped, so they do
    not pile up when no writer consumes them.
    """

    priority = Priority.LOWEST  # after evaluation, so metrics of this step are written with it

    def __init__(self, *, period: int = 20) -> None:
        if period < 1:
            raise ConfigError(f"PeriodicWriter(period={period}): period must be >= 1")
        self.period = period

    def _write(self) -> None:
        for writer in self.trainer.writers:
            writer.write()
        storage = self.trainer.storage
        storage.clear_images()
        storage.clear_histograms()
        storage.clear_texts()

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self.period == 0 or it == self.trainer.max_iter - 1:
            self._write()

    def after_train(self) -> None:
        # Not closed here: whoever made the writers closes them (the run still logs its final
        # metrics and hyper-parameters through them after training).
        self._write()
