"""Iteration-based LR schedules: LR_SCHEDULERS components (``lr_scheduler=WarmupCosineLR``), fvcore
parameter schedules with a warm-up, driving a torch scheduler.

The schedule is a function of training progress ``where = iter / max_iter`` in [0, 1] returning a
multiplier of each param group's initial lr (:class:`LRMultiplier`). The lr used by iteration
``i`` is ``base_lr * schedule(i / max_iter)``; the ``LRScheduler`` hook steps it after each step.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Sequence

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

from framework.errors import ConfigError
from framework.registry import LR_SCHEDULERS

__all__ = [
    "WarmupParamScheduler",
    "LRMultiplier",
    "WarmupSchedule",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "build_lr_scheduler",
]

logger = logging.getLogger(__name__)


class WarmupParamScheduler(CompositeParamScheduler):
    """Prepend a warm-up to ``scheduler``.

    During the first ``warmup_length`` of training the value goes from
    ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)`` (linearly, or stays at the start
    value for ``"constant"``); afterwards it is ``scheduler(where)`` unchanged (not rescaled), so
    decay steps stay at their absolute iterations.

    Args:
        scheduler: the main schedule.
        warmup_factor: start multiplier, e.g. 0.001.
        warmup_length: fraction of training in [0, 1], e.g. ``warmup_iters / max_iter``.
        warmup_method: ``"linear"`` or ``"constant"``.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: Literal["linear", "constant"] = "linear",
    ) -> None:
        start = warmup_factor * scheduler(0.0)
        end = scheduler(warmup_length)
        if warmup_method == "linear":
            warmup: ParamScheduler = LinearParamScheduler(start, end)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start)
        else:
            raise ConfigError(f"warmup_method {warmup_method!r} is not one of ['linear', 'constant']")
        super().__init__(
            [warmup, scheduler],
            lengths=[warmup_length, 1.0 - warmup_length],
            interval_scaling=["rescaled", "fixed"],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """A torch LR scheduler setting each param group's lr to ``initial lr * multiplier(iter / max_iter)``.

    Relative lrs between groups (e.g. a bias lr factor) are kept. The fvcore multiplier is a pure
    function, so the state is only the iteration (``last_epoch``) and the initial lrs.

    Args:
        optimizer: the optimizer whose lrs it sets.
        multiplier: an fvcore ``ParamScheduler`` over [0, 1].
        max_iter: iterations of the whole schedule.
        last_iter: the iteration already done when resuming (``-1``: start).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, multiplier: ParamScheduler, max_iter: int, last_iter: int = -1
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"LRMultiplier needs an fvcore ParamScheduler, got {type(multiplier).__name__}")
        if max_iter < 1:
            raise ConfigError(f"LR scheduler max_iter must be >= 1, got {max_iter}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = state_dict["last_epoch"]
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def multiplier_at(self, iteration: int) -> float:
        """The lr multiplier that iteration ``iteration`` uses."""
        if iteration > self._max_iter:
            raise RuntimeError(
                f"the LR schedule was built for max_iter={self._max_iter} but is being stepped to iteration "
                f"{iteration}; build it with the trainer's max_iter"
            )
        return self._multiplier(iteration / self._max_iter)

    def get_lr(self) -> list[float]:
        m = self.multiplier_at(self.last_epoch)
        return [base_lr * m for base_lr in self.base_lrs]


class WarmupSchedule(ParamScheduler):
    """Base of the LR_SCHEDULERS entries: an lr multiplier over training progress, after a warm-up.

    A subclass implements :meth:`main_schedule` (the schedule without warm-up, an fvcore
    ``ParamScheduler`` over ``where`` in [0, 1]) and forwards ``**kwargs`` here, so it inherits the
    warm-up knobs::

        @LR_SCHEDULERS.register()
        class WarmupPolyLR(WarmupSchedule):
            def __init__(self, max_iter: int, *, power: float = 0.9, **kwargs):
                super().__init__(max_iter, **kwargs)
                self.power = power

            def main_schedule(self) -> ParamScheduler:
                return PolynomialDecayParamScheduler(1.0, self.power)

    Args:
        max_iter: iterations of the whole schedule (runtime: the trainer's ``max_iter``).
        warmup_iters: iterations of warm-up (0: none).
        warmup_factor: multiplier at iteration 0.
        warmup_method: ``"linear"`` ramp or ``"constant"`` factor during warm-up.
    """

    def __init__(
        self,
        max_iter: int,
        *,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        warmup_method: Literal["linear", "constant"] = "linear",
    ) -> None:
        if max_iter < 1:
            raise ConfigError(f"lr scheduler max_iter must be >= 1, got {max_iter}")
        if warmup_iters < 0:
            raise ConfigError(f"config path 'lr_scheduler.warmup_iters': must be >= 0, got {warmup_iters}")
        if warmup_method not in ("linear", "constant"):
            raise ConfigError(f"config path 'lr_scheduler.warmup_method': {warmup_method!r} is not one of ['linear', 'constant']")
        self.max_iter = max_iter
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.warmup_method = warmup_method
        self._schedule: ParamScheduler | None = None

    def main_schedule(self) -> ParamScheduler:
        """The multiplier without warm-up, over ``where`` in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} must implement main_schedule()")

    def __call__(self, where: float) -> float:
        if self._schedule is None:  # built on first use: a subclass sets its own knobs after super().__init__
            sched = self.main_schedule()
            if self.warmup_iters > 0:
                sched = WarmupParamScheduler(
                    sched, self.warmup_factor, min(self.warmup_iters / self.max_iter, 1.0), self.warmup_method
                )
            self._schedule = sched
        return self._schedule(where)


@LR_SCHEDULERS.register()
class WarmupMultiStepLR(WarmupSchedule):
    """Multiply the lr by ``gamma`` at each of ``steps``, after the warm-up (detectron2's default).

    Args:
        steps: iterations where the lr drops (positive, increasing; those ``>= max_iter`` are ignored
            with a warning, so short debug runs can keep the schedule).
        gamma: factor per drop.

    Example: ``max_iter=40, steps=(20, 30), warmup_iters=10, warmup_factor=0.001`` gives multipliers
    0.001 at iteration 0, 0.5005 at 5, 1 at 10..19, 0.1 at 20..29 and 0.01 from 30.
    """

    def __init__(self, max_iter: int, *, steps: Sequence[int] = (), gamma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(max_iter, **kwargs)
        steps = [int(s) for s in steps]
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(s <= 0 for s in steps):
            raise ConfigError(f"config path 'lr_scheduler.steps': must be positive and strictly increasing, got {steps}")
        self.steps = [s for s in steps if s < max_iter]
        if len(self.steps) != len(steps):
            ignored = [s for s in steps if s >= max_iter]
            logger.warning(f"lr scheduler steps {ignored} are >= max_iter={max_iter} and are ignored")
        self.gamma = gamma

    def main_schedule(self) -> ParamScheduler:
        return MultiStepParamScheduler(
            values=[self.gamma**k for k in range(len(self.steps) + 1)], milestones=self.steps, num_updates=self.max_iter
        )


@LR_SCHEDULERS.register()
class WarmupCosineLR(WarmupSchedule):
    """Half-cosine decay from 1 to ``end_lr_factor`` over the whole run, after the warm-up.

    Args:
        end_lr_factor: the final multiplier (detectron2's ``BASE_LR_END / BASE_LR``).
    """

    def __init__(self, max_iter: int, *, end_lr_factor: float = 0.0, **kwargs: Any) -> None:
        super().__init__(max_iter, **kwargs)
        if not 0.0 <= end_lr_factor <= 1.0:
            raise ConfigError(f"config path 'lr_scheduler.end_lr_factor': must be in [0, 1], got {end_lr_factor}")
        self.end_lr_factor = end_lr_factor

    def main_schedule(self) -> ParamScheduler:
        return CosineParamScheduler(1.0, self.end_lr_factor)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, spec: Any, *, max_iter: int, path: str = "lr_scheduler"
) -> LRMultiplier:
    """The torch scheduler of a run: the LR_SCHEDULERS component ``spec`` (a name, or a mapping with
    ``name`` and knobs: the ``lr_scheduler`` section) as the multiplier of ``optimizer``'s lrs."""
    multiplier = LR_SCHEDULERS.build(spec, max_iter=max_iter, path=path)
    return LRMultiplier(optimizer, multiplier=multiplier, max_iter=max_iter)
