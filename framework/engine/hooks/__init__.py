"""Training hooks: the :class:`Hook` protocol, the ``HOOKS`` registry and the built-in hooks.

Built-in hooks and their default priorities (lower runs first)::

    IterationTimer        0  HIGHEST       time per step
    LRScheduler          30  HIGH          put lr, step the LR scheduler
    PeriodicCheckpointer 50  NORMAL        model_{iter:07d}.pth, model_final.pth
    EvalHook             60  BELOW_NORMAL  trainer.test_fn() -> metrics
    BestCheckpointer     70  LOW           model_best.pth when a metric improves
    VisualizationHook    75                gt | predictions images of fixed val images
    PeriodicWriter      100  LOWEST        flush the writers
"""

from framework.engine.hooks.base import HOOKS, Hook, Priority, build_hooks, parse_priority
from framework.engine.hooks.checkpoint import BestCheckpointer, PeriodicCheckpointer
from framework.engine.hooks.common import IterationTimer, LRScheduler, PeriodicWriter
from framework.engine.hooks.evaluation import EvalHook, flatten_results_dict
from framework.engine.hooks.visualization import VisualizationData, VisualizationHook

__all__ = [
    "HOOKS",
    "Hook",
    "Priority",
    "build_hooks",
    "parse_priority",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "BestCheckpointer",
    "EvalHook",
    "PeriodicWriter",
    "flatten_results_dict",
    "VisualizationHook",
    "VisualizationData",
]
