"""Training: the :class:`Trainer` loop, its hooks, optimizer and LR scheduler construction; inference
on images with :class:`Predictor`."""

from framework.engine.hooks import (
    HOOKS,
    BestCheckpointer,
    EvalHook,
    Hook,
    IterationTimer,
    LRScheduler,
    ModelEMA,
    PeriodicCheckpointer,
    PeriodicWriter,
    Priority,
    build_hooks,
)
from framework.engine.lr_scheduler import LRMultiplier, WarmupParamScheduler, build_lr_scheduler
from framework.engine.optim import build_optimizer, get_default_param_groups
from framework.engine.predictor import Predictor
from framework.engine.trainer import GradClipper, Trainer

__all__ = [
    "Trainer",
    "GradClipper",
    "HOOKS",
    "Hook",
    "Priority",
    "build_hooks",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "BestCheckpointer",
    "EvalHook",
    "ModelEMA",
    "PeriodicWriter",
    "build_optimizer",
    "get_default_param_groups",
    "build_lr_scheduler",
    "LRMultiplier",
    "WarmupParamScheduler",
    "Predictor",
]
