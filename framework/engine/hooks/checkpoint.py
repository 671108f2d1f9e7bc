"""Checkpointing hooks: periodic (keep the last N) and best-by-metric. Both save through the run's
:class:`framework.checkpoint.Checkpointer` (model, optimizer, scheduler and trainer state)."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from typing import Any, Literal, Optional

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop
from framework.errors import ConfigError, did_you_mean
from framework.evaluation.evaluator import primary_metric

__all__ = ["PeriodicCheckpointer", "BestCheckpointer"]

logger = logging.getLogger(__name__)


@HOOKS.register()
class PeriodicCheckpointer(Hook):
    """Save ``{file_prefix}_{iter:07d}.pth`` every ``period`` steps and ``{file_prefix}_final.pth`` after
    the last step, each pointed to by ``last_checkpoint``.

    ``iter`` in the file name is the 0-based iteration just completed (as in detectron2: with
    ``period=5000`` the files are ``model_0004999.pth``, ``model_0009999.pth``, ...), and resuming from
    it continues at ``iter + 1``.

    Args:
        checkpointer: saves the run's state.
        period: steps between checkpoints.
        max_to_keep: keep only this many newest periodic checkpoints on disk (counting those of an
            earlier, resumed run); ``None`` keeps all. The final checkpoint is never removed.
        file_prefix: file name prefix.
    """

    priority = Priority.NORMAL

    def __init__(
        self, checkpointer: Any, *, period: int = 5000, max_to_keep: Optional[int] = 3, file_prefix: str = "model"
    ) -> None:
        if period < 1:
            raise ConfigError(f"PeriodicCheckpointer(period={period}): period must be >= 1")
        if max_to_keep is not None and max_to_keep < 1:
            raise ConfigError(f"PeriodicCheckpointer(max_to_keep={max_to_keep}): must be >= 1, or None to keep all")
        self.checkpointer = checkpointer
        self.period = period
        self.max_to_keep = max_to_keep
        self.file_prefix = file_prefix

    def after_step(self, loop: TrainLoop) -> None:
        it = loop.iter
        if (it + 1) % self.period == 0:
            self.checkpointer.save(f"{self.file_prefix}_{it:07d}", iteration=it)
            if self.max_to_keep is not None:
                self.checkpointer.prune(self.file_prefix, keep=self.max_to_keep)
        if it >= loop.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=it)


@HOOKS.register()
class BestCheckpointer(Hook):
    """Save ``{file_prefix}.pth`` whenever an evaluation improves ``metric``.

    Listens to the evaluations reported to the loop (``after_eval``), whichever hook ran them. The
    best value and its iteration are part of the checkpointed trainer state, so a resumed run only
    saves when it beats the best of the earlier run. The file does not move the
    ``last_checkpoint`` pointer (resuming always uses the latest periodic checkpoint).

    Args:
        checkpointer: saves the run's state.
        metric_names: the flat metrics the run's evaluators will produce, or ``None`` when they
            cannot say beforehand (then ``metric`` is checked at the first evaluation).
        metric: the flat metric name, ``"<task>/<name>"``; ``None``: the evaluators' primary
            metric, ``segm/AP`` when masks are evaluated, else ``bbox/AP``. A metric the evaluators
            will not produce is a :class:`ConfigError` here, before training starts.
        mode: ``"max"`` when higher is better (AP), ``"min"`` when lower is (a loss).
        file_prefix: file name (without ``.pth``).
    """

    priority = Priority.LOW

    def __init__(
        self,
        checkpointer: Any,
        metric_names: Optional[Collection[str]] = None,
        *,
        metric: Optional[str] = None,
        mode: Literal["max", "min"] = "max",
        file_prefix: str = "model_best",
    ) -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"BestCheckpointer(mode={mode!r}): must be 'max' or 'min'")
        self.checkpointer = checkpointer
        self.metric = metric
        if metric_names is not None:
            self.metric = self._resolve(metric_names, when="the configured evaluators produce")
        self.mode = mode
        self.file_prefix = file_prefix
        self.best_value: float | None = None
        self.best_iter: int | None = None

    def _resolve(self, names: Collection[str], *, when: str) -> str:
        """``self.metric``, or the primary metric when it is ``None``; a ConfigError when ``names``
        lacks it (naming the metric and what ``names`` offers)."""
        if self.metric is None:
            chosen = primary_metric(names)
            if chosen is None:
                raise ConfigError(
                    f"config path 'hooks.best_checkpointer.metric': no default metric among the ones {when} "
                    f"({', '.join(sorted(names)) or 'none'}); set one, or remove the hook with hooks.best_checkpointer=null"
                )
            return chosen
        if self.metric not in names:
            summary = sorted(n for n in names if "-" not in n.rpartition("/")[2])  # per-category entries left out
            raise ConfigError(
                f"config path 'hooks.best_checkpointer.metric': {self.metric!r} is not among the metrics {when}."
                f"{did_you_mean(self.metric, names)} Available: {', '.join(summary)} (and per-category AP-<class>)."
            )
        return self.metric

    def after_eval(self, loop: TrainLoop, iteration: int, metrics: Mapping[str, float]) -> None:
        if not metrics:  # processes other than the main one
            return
        self.metric = self._resolve(metrics, when="the evaluation returned")
        value = float(metrics[self.metric])
        if math.isnan(value):
            logger.warning(f"BestCheckpointer: {self.metric} is NaN at iteration {iteration}; not a candidate for best")
            return
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if not better:
            logger.info(
                f"{self.metric}={value:.4g} at iteration {iteration} does not beat {self.best_value:.4g} "
                f"(iteration {self.best_iter})"
            )
            return
        previous = self.best_value
        self.best_value, self.best_iter = value, iteration
        self.checkpointer.save(self.file_prefix, tag_last=False, iteration=iteration)
        logger.info(
            f"New best {self.metric}={value:.4g} at iteration {iteration} (previous: {previous}); "
            f"saved {self.file_prefix}.pth"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_iter = state.get("best_iter")
