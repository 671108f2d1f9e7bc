"""The hook protocol, priorities, the HOOKS registry and building hooks from a config dict.

A hook is called by the trainer at fixed points of the loop::

    before_train()
    for iter in range(start_iter, max_iter):
        before_step()
        run_step():  data -> forward -> losses -> backward -> after_backward() -> clip -> optimizer.step
        after_step()
    after_train()          # also after an exception; trainer.iter == max_iter only on success

Hooks run in increasing ``priority`` (ties keep their order). They reach the trainer, its model,
optimizer, storage, checkpointer, writers and ``test_fn`` through ``self.trainer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from framework.errors import ConfigError, did_you_mean
from framework.registry import HOOKS

if TYPE_CHECKING:
    from framework.engine.trainer import Trainer

__all__ = ["HOOKS", "Hook", "Priority", "build_hooks", "parse_priority"]

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


class Hook:
    """Base class of training hooks; override the points you need.

    Attributes:
        priority: lower runs first; a class default, overridable per instance (config key ``priority``).
        trainer: the :class:`~framework.engine.trainer.Trainer` (a weak proxy), set on registration.
        name: the key of the hook in the ``hooks`` config dict (or its class name); keys its state
            in checkpoints.
    """

    priority: int = Priority.NORMAL
    trainer: "Trainer"
    name: str | None = None

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, also when training failed."""

    def before_step(self) -> None:
        """Called before each ``run_step``."""

    def after_backward(self) -> None:
        """Called after ``loss.backward()`` (gradients unscaled when using fp16) and before clipping
        and the optimizer step."""

    def after_step(self) -> None:
        """Called after each ``run_step`` (the optimizer has stepped; ``trainer.iter`` is the step done)."""

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (e.g. the best metric so far); empty for stateless hooks."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority})"


def build_hooks(hooks_cfg: Mapping[str, Any] | None) -> list[Hook]:
    """Build the hooks of a config dict keyed by name, sorted by ``(priority, key)``.

    Args:
        hooks_cfg: ``{key: spec}``; a spec is a registered hook name, a mapping with ``name`` (default:
            the key) and knobs plus an optional ``priority`` (int or level name) overriding the hook's
            default, an already built :class:`Hook`, or ``None`` to leave the hook out (how a hook is
            removed from the command line: ``hooks.eval=null``).

    Returns:
        the hooks, each with ``name`` set to its key.
    """
    if hooks_cfg is None:
        return []
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
        hook = HOOKS.build(spec, path=path)
        if not isinstance(hook, Hook):
            raise ConfigError(f"config path '{path}': expected a Hook, got {type(hook).__name__}")
        if priority is not None:
            hook.priority = parse_priority(priority, path=f"{path}.priority")
        hook.name = str(key)
        built.append((hook.priority, str(key), hook))
    built.sort(key=lambda t: (t[0], t[1]))
    return [h for _, _, h in built]

