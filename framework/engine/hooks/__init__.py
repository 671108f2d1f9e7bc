"""Training hooks: the :class:`Hook` protocol, the ``HOOKS`` registry and the built-in hooks.

Built-in hooks and their default priorities (lower runs first)::

    IterationTimer        0  HIGHEST       time per step
    LRScheduler          30  HIGH          put lr, step the LR scheduler
    PeriodicCheckpointer 50  NORMAL        model_{iter:07d}.pth, model_final.pth
    ModelEMA             40  ABOVE_NORMAL  an average of the weights, evaluated instead (not a default)
    EvalHook             60  BELOW_NORMAL  loop.evaluate(evaluate): before_eval / after_eval on every hook
    BestCheckpointer     70  LOW           model_best.pth when the metric improves (after_eval)
    VisualizationHook    75                gt | predictions images of fixed val images
    PeriodicWriter      100  LOWEST        flush the writers

What a hook may rely on is documented once, in :mod:`framework.engine.hooks.base`.
"""

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop, build_hooks, parse_priority
from framework.engine.hooks.checkpoint import BestCheckpointer, PeriodicCheckpointer
from framework.engine.hooks.common import IterationTimer, LRScheduler, PeriodicWriter
from framework.engine.hooks.ema import ModelEMA
from framework.engine.hooks.evaluation import EvalHook
from framework.engine.hooks.visualization import VisualizationData, VisualizationHook

__all__ = [
    "HOOKS",
    "Hook",
    "TrainLoop",
    "Priority",
    "build_hooks",
    "parse_priority",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "BestCheckpointer",
    "EvalHook",
    "ModelEMA",
    "PeriodicWriter",
    "VisualizationHook",
    "VisualizationData",
]
