"""Periodic evaluation during training."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Optional

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop
from framework.errors import ConfigError
from framework.utils import comm

__all__ = ["EvalHook"]

logger = logging.getLogger(__name__)


@HOOKS.register()
class EvalHook(Hook):
    """Evaluate every ``period`` steps and after the last one, through the loop.

    :meth:`TrainLoop.evaluate` frames each evaluation with every hook's ``before_eval`` /
    ``after_eval`` (:class:`BestCheckpointer` listens there); the flat metrics (``"bbox/AP"``) also
    go into the event storage as unsmoothed scalars.

    Args:
        evaluate: ``() -> {"bbox/AP": 38.0, ...}`` (flat metrics on the main process, ``{}`` on the
            others); it switches the model to eval mode and back, and runs on every process.
        evaluate_final: the same for the evaluation after the last step (default ``evaluate``): a
            run offers its evaluation with test-time augmentation here (``tta``), which, as in
            detectron2, is too slow to repeat every ``period`` steps.
        period: steps between evaluations; ``0`` evaluates only after the last step.
    """

    priority = Priority.BELOW_NORMAL  # after the periodic checkpoint of the same step

    def __init__(self, evaluate: Callable[[], Mapping[str, float]],
                 evaluate_final: Optional[Callable[[], Mapping[str, float]]] = None, *, period: int = 0) -> None:
        if period < 0:
            raise ConfigError(f"EvalHook(period={period}): period must be >= 0 (0: only at the end)")
        self.evaluate = evaluate
        self.evaluate_final = evaluate_final or evaluate
        self.period = period

    def _evaluate(self, loop: TrainLoop, iteration: int, evaluate: Callable[[], Mapping[str, float]]) -> None:
        metrics = loop.evaluate(iteration, evaluate)
        if metrics:
            loop.storage.put_scalars(**metrics, smoothing_hint=False, cur_iter=iteration)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not math.isnan(v))
            logger.info(f"Evaluation at iteration {iteration}: {shown}")
        # Other ranks may still be evaluating; keep them in step before training goes on.
        comm.synchronize()

    def after_step(self, loop: TrainLoop) -> None:
        next_iter = loop.iter + 1
        # The last step is evaluated in after_train, once the other hooks (final checkpoint) ran.
        if self.period > 0 and next_iter % self.period == 0 and next_iter != loop.max_iter:
            self._evaluate(loop, loop.iter, self.evaluate)

    def after_train(self, loop: TrainLoop) -> None:
        if loop.iter >= loop.max_iter:  # training completed (not an exception)
            self._evaluate(loop, loop.max_iter - 1, self.evaluate_final)
