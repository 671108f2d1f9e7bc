"""Periodic evaluation during training."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from framework.engine.hooks.base import HOOKS, Hook, Priority
from framework.errors import ConfigError
from framework.utils import comm

__all__ = ["EvalHook", "flatten_results_dict"]

logger = logging.getLogger(__name__)


def flatten_results_dict(results: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """``{"bbox": {"AP": 38.0, "AP50": 59.0}}`` -> ``{"bbox/AP": 38.0, "bbox/AP50": 59.0}`` (any depth)."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub, v in flatten_results_dict(value, sep=sep).items():
                flat[f"{key}{sep}{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


@HOOKS.register()
class EvalHook(Hook):
    """Call ``trainer.test_fn()`` every ``period`` steps and after the last one; record the metrics.

    ``test_fn`` returns a nested dict of numbers (e.g. ``{"bbox": {"AP": 38.0}, "segm": {...}}``);
    the flattened metrics (``"bbox/AP"``) are put in the event storage as unsmoothed scalars and left
    in ``trainer.latest_metrics`` (with ``trainer.latest_metrics_iter``) for later hooks such as
    :class:`BestCheckpointer`. ``test_fn`` is responsible for switching the model to eval mode and
    back, and must be called on every process when distributed.

    Args:
        period: steps between evaluations; ``0`` evaluates only after the last step.
    """

    priority = Priority.BELOW_NORMAL  # after the periodic checkpoint of the same step

    def __init__(self, *, period: int = 0) -> None:
        if period < 0:
            raise ConfigError(f"EvalHook(period={period}): period must be >= 0 (0: only at the end)")
        self.period = period

    def before_train(self) -> None:
        if getattr(self.trainer, "test_fn", None) is None:
            raise ConfigError(
                f"hook {self.name or 'EvalHook'} evaluates but the trainer has no test_fn; "
                "give Trainer(test_fn=...) or remove the hook (hooks.<key>=null)"
            )

    def _evaluate(self, iteration: int) -> None:
        results = self.trainer.test_fn()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(f"test_fn must return a (nested) dict of metrics, got {type(results).__name__}")
            flat = flatten_results_dict(results)
            for k, v in flat.items():
                try:
                    flat[k] = float(v)
                except (TypeError, ValueError):
                    raise TypeError(f"test_fn must return a nested dict of numbers; got {k!r}: {v!r}") from None
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False, cur_iter=iteration)
            self.trainer.latest_metrics = flat
            self.trainer.latest_metrics_iter = iteration
            shown = ", ".join(f"{k}={v:.4g}" for k, v in flat.items() if not math.isnan(v))
            logger.info(f"Evaluation at iteration {iteration}: {shown}")
        # Other ranks may still be evaluating; keep them in step before training goes on.
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        # The last step is evaluated in after_train, once the other hooks (final checkpoint) ran.
        if self.period > 0 and next_iter % self.period == 0 and next_iter != self.trainer.max_iter:
            self._evaluate(self.trainer.iter)

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:  # training completed (not an exception)
            self._evaluate(self.trainer.max_iter - 1)
