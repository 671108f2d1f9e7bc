"""Checkpointing hooks: periodic (keep the last N) and best-by-metric. Both delegate to
``trainer.checkpointer`` (:class:`framework.checkpoint.Checkpointer`)."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Optional

from framework.engine.hooks.base import HOOKS, Hook, Priority
from framework.errors import ConfigError, did_you_mean

__all__ = ["PeriodicCheckpointer", "BestCheckpointer"]

logger = logging.getLogger(__name__)


def _require_checkpointer(hook: Hook) -> Any:
    checkpointer = getattr(hook.trainer, "checkpointer", None)
    if checkpointer is None:
        raise ConfigError(
            f"hook {hook.name or type(hook).__name__} saves checkpoints but the trainer has no checkpointer; "
            "give Trainer(checkpointer=...) or remove the hook"
        )
    return checkpointer


@HOOKS.register()
class PeriodicCheckpointer(Hook):
    """Save ``{file_prefix}_{iter:07d}.pth`` every ``period`` steps and ``{file_prefix}_final.pth`` after
    the last step, each pointed to by ``last_checkpoint``.

    ``iter`` in the file name is the 0-based iteration just completed (as in detectron2: with
    ``period=5000`` the files are ``model_0004999.pth``, ``model_0009999.pth``, ...), and resuming from
    it continues at ``iter + 1``.

    Args:
        period: steps between checkpoints.
        max_to_keep: keep only this many newest periodic checkpoints on disk (counting those of an
            earlier, resumed run); ``None`` keeps all. The final checkpoint is never removed.
        file_prefix: file name prefix.
    """

    priority = Priority.NORMAL

    def __init__(self, *, period: int = 5000, max_to_keep: Optional[int] = 3, file_prefix: str = "model") -> None:
        if period < 1:
            raise ConfigError(f"PeriodicCheckpointer(period={period}): period must be >= 1")
        if max_to_keep is not None and max_to_keep < 1:
            raise ConfigError(f"PeriodicCheckpointer(max_to_keep={max_to_keep}): must be >= 1, or None to keep all")
        self.period = period
        self.max_to_keep = max_to_keep
        self.file_prefix = file_prefix

    def before_train(self) -> None:
        _require_checkpointer(self)

    def after_step(self) -> None:
        it = self.trainer.iter
        checkpointer = self.trainer.checkpointer
        if (it + 1) % self.period == 0:
            checkpointer.save(f"{self.file_prefix}_{it:07d}", iteration=it)
            if self.max_to_keep is not None:
                checkpointer.prune(self.file_prefix, keep=self.max_to_keep)
        if it >= self.trainer.max_iter - 1:
            checkpointer.save(f"{self.file_prefix}_final", iteration=it)


@HOOKS.register()
class BestCheckpointer(Hook):
    """Save ``{file_prefix}.pth`` whenever a new evaluation improves ``metric``.

    Reads the flat metrics an evaluation hook left in ``trainer.latest_metrics`` (e.g.
    ``{"segm/AP": 35.2, "bbox/AP": 38.1}``), so it must run after that hook (its default priority
    does). The best value and its iteration are part of the checkpointed trainer state, so a resumed
    run only saves when it beats the best of the earlier run. The file does not move the
    ``last_checkpoint`` pointer (resuming always uses the latest periodic checkpoint).

    Args:
        metric: the flat metric name, ``"<task>/<name>"``.
        mode: ``"max"`` when higher is better (AP), ``"min"`` when lower is (a loss).
        file_prefix: file name (without ``.pth``).
    """

    priority = Priority.LOW

    def __init__(
        self, *, metric: str = "segm/AP", mode: Literal["max", "min"] = "max", file_prefix: str = "model_best"
    ) -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"BestCheckpointer(mode={mode!r}): must be 'max' or 'min'")
        self.metric = metric
        self.mode = mode
        self.file_prefix = file_prefix
        self.best_value: float | None = None
        self.best_iter: int | None = None
        self._last_seen: Any = None  # the metrics dict already checked

    def before_train(self) -> None:
        _require_checkpointer(self)

    def _check(self) -> None:
        metrics = getattr(self.trainer, "latest_metrics", None)
        if metrics is None or metrics is self._last_seen:
            return
        self._last_seen = metrics
        if self.metric not in metrics:
            raise ConfigError(
                f"BestCheckpointer: metric {self.metric!r} is not among the evaluation results."
                f"{did_you_mean(self.metric, metrics)} Available: {', '.join(sorted(metrics))}."
            )
        value = float(metrics[self.metric])
        it = self.trainer.latest_metrics_iter
        if math.isnan(value):
            logger.warning(f"BestCheckpointer: {self.metric} is NaN at iteration {it}; not a candidate for best")
            return
        better = self.best_value is None or (value > self.best_value if self.mode == "max" else value < self.best_value)
        if not better:
            logger.info(
                f"{self.metric}={value:.4g} at iteration {it} does not beat {self.best_value:.4g} "
                f"(iteration {self.best_iter})"
            )
            return
        previous = self.best_value
        self.best_value, self.best_iter = value, it
        self.trainer.checkpointer.save(self.file_prefix, tag_last=False, iteration=it)
        logger.info(
            f"New best {self.metric}={value:.4g} at iteration {it} (previous: {previous}); saved {self.file_prefix}.pth"
        )

    def after_step(self) -> None:
        self._check()

    def after_train(self) -> None:
        self._check()

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_iter": self.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value = state.get("best_value")
        self.best_iter = state.get("best_iter")
