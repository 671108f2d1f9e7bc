"""ModelEMA: an exponential moving average of the model's weights, evaluated instead of them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop
from framework.errors import ConfigError

__all__ = ["ModelEMA", "ema_decay"]

logger = logging.getLogger(__name__)


def ema_decay(update: int, *, decay: float, min_decay: float = 0.0, warmup: bool = False,
              warmup_gamma: float = 1.0, warmup_power: float = 2 / 3, update_after: int = 0) -> float:
    """The decay of the ``update``-th EMA update (1-based), as timm's ``ModelEmaV3`` computes it.

    ``n = update - update_after - 1``: the first update (n <= 0) copies the weights (decay 0). With
    ``warmup``, ``1 - (1 + n / warmup_gamma) ** -warmup_power`` clamped to ``[min_decay, decay]``
    (gamma 1, power 2/3 reach 0.999 after 31.6k updates; power 3/4 after 10k), else ``decay``.
    """
    n = max(0, update - update_after - 1)
    if n <= 0:
        return 0.0
    if not warmup:
        return decay
    return max(min(1.0 - (1.0 + n / warmup_gamma) ** -warmup_power, decay), min_decay)


@HOOKS.register()
class ModelEMA(Hook):
    """Keep an exponential moving average of the model's state (parameters and floating-point
    buffers; integer buffers are copied) after every step, ``ema = decay * ema + (1 - decay) * w``,
    with timm's decay schedule (:func:`ema_decay`); evaluate it instead of the trained weights.

    With ``evaluate_ema`` every evaluation (``EvalHook``, through ``TrainLoop.evaluate``) runs on
    the average: the weights are swapped in at ``before_eval`` and the trained ones restored at
    ``after_eval``, which runs last (after-eval hooks run in reverse priority order), so that the
    best checkpoint (``model_best.pth``) holds the averaged weights. Periodic checkpoints keep the
    trained weights under ``model`` and the average in the trainer state (``hooks.<key>``), so a
    resumed run continues the same average. Under DDP every process keeps its own copy: the
    parameters' averages are equal on all of them (the weights are, after the gradient
    all-reduce); trainable BatchNorm statistics differ per process as the model's own do, and an
    evaluation uses rank 0's (it broadcasts the buffers first).

    Args:
        model: the model being trained.
        decay: the decay once warmed up (timm's default 0.9999 suits 100k+ step schedules; a few
            thousand steps want about 0.999).
        min_decay, warmup, warmup_gamma, warmup_power, update_after: timm's ModelEmaV3 schedule.
        evaluate_ema: evaluate (and pick the best checkpoint on) the average; else only keep it.
    """

    priority = Priority.ABOVE_NORMAL  # after the LR step, before the step's periodic checkpoint

    def __init__(
        self,
        model: nn.Module,
        *,
        decay: float = 0.9999,
        min_decay: float = 0.0,
        warmup: bool = False,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
        update_after: int = 0,
        evaluate_ema: bool = True,
    ) -> None:
        if not 0.0 <= min_decay <= decay < 1.0:
            raise ConfigError(f"ModelEMA: need 0 <= min_decay <= decay < 1, got min_decay={min_decay}, decay={decay}")
        if warmup_gamma <= 0 or warmup_power <= 0 or update_after < 0:
            raise ConfigError(f"ModelEMA: warmup_gamma and warmup_power must be > 0 and update_after >= 0, got "
                              f"{warmup_gamma}, {warmup_power}, {update_after}")
        self.model = model
        self.schedule = dict(decay=decay, min_decay=min_decay, warmup=warmup, warmup_gamma=warmup_gamma,
                             warmup_power=warmup_power, update_after=update_after)
        self.evaluate_ema = evaluate_ema
        self.updates = 0
        self.average: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._trained: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def after_step(self, loop: TrainLoop) -> None:
        self.updates += 1
        decay = ema_decay(self.updates, **self.schedule)
        pairs = list(zip(self.average.values(), self.model.state_dict().values()))
        floating = [(a, w) for a, w in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floating], [w.detach() for _, w in floating], 1.0 - decay)
        for a, w in pairs:
            if not a.is_floating_point():
                a.copy_(w)
        loop.storage.put_scalar("ema/decay", decay, smoothing_hint=False)

    @torch.no_grad()
    def before_eval(self, loop: TrainLoop, iteration: int) -> None:
        if self.evaluate_ema:
            self._trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.average)

    @torch.no_grad()
    def after_eval(self, loop: TrainLoop, iteration: int, metrics: Mapping[str, float]) -> None:
        if self._trained is not None:
            self.model.load_state_dict(self._trained)
            self._trained = None

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "average": {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.average) - set(state["average"]))
        if missing:
            raise ConfigError(f"ModelEMA: the checkpoint's average lacks {len(missing)} entries of the model "
                              f"({', '.join(missing[:5])}...): it was saved for another model")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for k, v in self.average.items():
                v.copy_(state["average"][k])
