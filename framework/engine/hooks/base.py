"""The hook protocol, what a hook may rely on, priorities, and building hooks from a config dict.

The trainer calls every hook at fixed points of the loop, in priority order::

    before_train(loop)
    for loop.iter in range(start_iter, max_iter):
        before_step(loop)
        run_step():  data -> forward -> losses -> backward -> after_backward(loop) -> clip -> optimizer.step
        after_step(loop)
    after_train(loop)      # also after an exception; loop.iter == max_iter only on success

    loop.evaluate(iteration, evaluate) -> metrics      # a hook evaluates (EvalHook):
        before_eval(loop, iteration)                   #   every hook, in priority order
        metrics = evaluate()
        after_eval(loop, iteration, metrics)           #   every hook, in reverse priority order

What a hook may rely on, in full:

* its **constructor arguments**. Parameters before the ``*`` are its dependencies, filled by name
  by the run's builder (:func:`framework.engine.train_job.build_training`) from what it offers:
  ``model`` (the plain module, not DDP's wrapper), ``optimizer``, ``scheduler``, ``checkpointer``,
  ``writers``, ``evaluate`` (``() -> {"bbox/AP": ...}``, to be called on every process),
  ``metric_names`` (what ``evaluate`` will return, or ``None`` when the evaluators cannot say
  beforehand), ``vis_data`` (:class:`~framework.engine.hooks.visualization.VisualizationData`)
  and ``output_dir``. Parameters after the ``*`` are its knobs (the config schema).
* the :class:`TrainLoop` passed to each call: ``iter``, ``start_iter``, ``max_iter``, ``storage``
  and :meth:`TrainLoop.evaluate`.

Nothing else: a hook never reads or writes the trainer, and the trainer knows hooks only through
this module (``Hook``, ``TrainLoop``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from framework.errors import ConfigError, did_you_mean
from framework.registry import HOOKS

if TYPE_CHECKING:
    from framework.utils.events import EventStorage

__all__ = ["HOOKS", "Hook", "TrainLoop", "Priority", "build_hooks", "parse_priority"]


class Priority:
    """Named priority levels (lower runs first), as in mmengine."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100

    @classmethod
    def levels(cls) -> dict[str, int]:
        return {k: v for k, v in vars(cls).items() if k.isupper()}


def parse_priority(value: Any, *, path: str = "priority") -> int:
    """An ``int`` priority from an int or a level name such as ``"LOW"``."""
    if isinstance(value, bool):
        raise ConfigError(f"config path '{path}': priority must be an int or a level name, got {value!r}")
    if isinstance(value, int):
        return value
    levels = Priority.levels()
    if isinstance(value, str) and value.upper() in levels:
        return levels[value.upper()]
    raise ConfigError(
        f"config path '{path}': {value!r} is not a priority; give an int (lower runs first) or one of "
        f"{list(levels)}.{did_you_mean(str(value).upper(), levels)}"
    )


class TrainLoop:
    """The running training as hooks see it; the trainer advances it, hooks only read it.

    Attributes:
        iter: the iteration being run (in ``before_step`` / ``after_backward`` / ``after_step``:
            the step's own, 0-based); ``max_iter`` after a training that completed.
        start_iter: the first iteration of this ``train()`` call (> 0 when resumed).
        max_iter: iterations of the whole training.
        storage: the :class:`~framework.utils.events.EventStorage` of this ``train()`` call.
    """

    def __init__(
        self,
        *,
        start_iter: int,
        max_iter: int,
        storage: "EventStorage",
        run_evaluation: Callable[[int, Callable[[], Mapping[str, float]]], dict[str, float]],
    ) -> None:
        self.iter = start_iter
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.storage = storage
        self._run_evaluation = run_evaluation

    def evaluate(self, iteration: int, evaluate: Callable[[], Mapping[str, float]]) -> dict[str, float]:
        """Evaluate the model after step ``iteration`` with ``evaluate`` (``() -> {"segm/AP": ...}``,
        flat metrics; ``{}`` on processes other than the main one), framed by every hook's
        :meth:`Hook.before_eval` (in priority order) and :meth:`Hook.after_eval` (in reverse order,
        so that a hook that changes the model for the evaluation, as ModelEMA does, restores it
        after every other hook saw the result). The last metrics are what ``Trainer.train()``
        returns. Returns the metrics."""
        return self._run_evaluation(int(iteration), evaluate)


class Hook:
    """Base class of training hooks; override the points you need (see the module docstring for
    what a hook may rely on).

    Attributes:
        priority: lower runs first; the class default, which a config entry may override with its
            ``priority`` key (the builder orders the hooks; a hook never changes it).
    """

    priority: ClassVar[int] = Priority.NORMAL

    def before_train(self, loop: TrainLoop) -> None:
        """Called once before the first iteration."""

    def after_train(self, loop: TrainLoop) -> None:
        """Called once after the last iteration, also when training failed (then ``loop.iter < max_iter``)."""

    def before_step(self, loop: TrainLoop) -> None:
        """Called before each step."""

    def after_backward(self, loop: TrainLoop) -> None:
        """Called after ``loss.backward()`` (gradients unscaled when using fp16) and before clipping
        and the optimizer step."""

    def after_step(self, loop: TrainLoop) -> None:
        """Called after each step (the optimizer has stepped; ``loop.iter`` is the step done)."""

    def before_eval(self, loop: TrainLoop, iteration: int) -> None:
        """Called before an evaluation of the model after step ``iteration`` (see :meth:`TrainLoop.evaluate`)."""

    def after_eval(self, loop: TrainLoop, iteration: int, metrics: Mapping[str, float]) -> None:
        """Called after an evaluation of the model after step ``iteration``, with its flat metrics
        (``{"bbox/AP": 38.1}``; empty on processes other than the main one), in reverse priority order."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (e.g. the best metric so far); empty for stateless hooks."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority})"


def build_hooks(hooks_cfg: Mapping[str, Any] | None, *, offered: Mapping[str, Any] | None = None) -> dict[str, Hook]:
    """Build the hooks of a config dict keyed by name, in the order they run: by ``(priority, key)``.

    Args:
        hooks_cfg: ``{key: spec}``; a spec is a registered hook name, a mapping with ``name`` (default:
            the key) and knobs plus an optional ``priority`` (int or level name) overriding the hook's
            default, an already built :class:`Hook`, or ``None`` to leave the hook out (how a hook is
            removed from the command line: ``hooks.eval=null``).
        offered: the dependencies hooks may take (see the module docstring); each hook gets those
            its constructor names, and one it requires but is not offered is an error naming both.

    Returns:
        ``{key: hook}`` in run order; the keys also key each hook's state in checkpoints.
    """
    if hooks_cfg is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(hooks_cfg, DictConfig):
        hooks_cfg = OmegaConf.to_container(hooks_cfg, resolve=True)  # type: ignore[assignment]
    if not isinstance(hooks_cfg, Mapping):
        raise ConfigError(f"config path 'hooks': expected a mapping of name -> hook, got {hooks_cfg!r}")
    built: list[tuple[int, str, Hook]] = []
    for key, spec in hooks_cfg.items():
        if spec is None:
            continue
        path = f"hooks.{key}"
        priority = None
        if isinstance(spec, Mapping):
            spec = dict(spec)
            priority = spec.pop("priority", None)
            spec.setdefault("name", key)
        hook = HOOKS.build(spec, path=path, offered=offered or {})
        if not isinstance(hook, Hook):
            raise ConfigError(f"config path '{path}': expected a Hook, got {type(hook).__name__}")
        rank = hook.priority if priority is None else parse_priority(priority, path=f"{path}.priority")
        built.append((rank, str(key), hook))
    built.sort(key=lambda t: (t[0], t[1]))
    return {key: hook for _, key, hook in built}
