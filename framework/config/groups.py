"""Register every component as an option of the Hydra config groups that can hold it.

The group of a component is where its parent's ``Spec[R]`` knob sits in the config tree: the
``backbone`` knob of a meta-architecture under ``model`` makes group ``model/backbone`` hold every
entry of BACKBONES; FPN's ``bottom_up`` knob makes ``model/backbone/bottom_up`` hold them too.
Each option is the component's schema (:func:`framework.config.schema.schema_for`), so selecting
``model/backbone=FPN`` composes a node with every knob at its signature default.
"""

from __future__ import annotations

from typing import Any, Iterator

from hydra.core.config_store import ConfigStore

from framework.config.schema import registry_schema, schema_for
from framework.registry import META_ARCHITECTURES, Registry, knobs

__all__ = ["ROOTS", "SECTIONS", "iter_groups", "register_config_groups"]

#: Top-level config groups that hold a component, and the registry they draw from. ``hook`` options
#: are placed under ``hooks.<key>`` by configs/hooks/*.yaml (``- /hook@<key>: <HookName>``).
ROOTS: dict[str, Registry] = {"model": META_ARCHITECTURES}


def default_roots() -> dict[str, Registry]:
    from framework.engine.hooks import HOOKS  # the engine registers after the model registries

    return {**ROOTS, "hook": HOOKS}


def iter_groups(roots: dict[str, Registry] | None = None) -> Iterator[tuple[str, Registry]]:
    """Yield ``(group_path, registry)`` for every config group reachable from ``roots``.

    A knob is not expanded again below itself (FPN's ``bottom_up`` may be any backbone, but the
    bottom-up of a bottom-up gets no group of its own), which keeps the tree finite.
    """
    seen: set[str] = set()

    def walk(group: str, registry: Registry, chain: tuple) -> Iterator[tuple[str, Registry]]:
        if group not in seen:
            seen.add(group)
            yield group, registry
        for _, component in registry:
            for knob in knobs(component):
                if knob.registry is None or (knob.registry, knob.name) in chain:
                    continue
                yield from walk(f"{group}/{knob.name}", knob.registry, chain + ((knob.registry, knob.name),))

    for key, registry in (roots or default_roots()).items():
        yield from walk(key, registry, ())


def SECTIONS() -> dict[str, Any]:
    """Schemas of the plain config sections, by option name of the ``_schema`` group.

    configs/train.yaml places them (``- _schema@solver: solver``); each is the keyword-only
    signature of the function or class that consumes the section, so its keys and types are
    checked at compose time like a component's.
    """
    from framework.data.build import build_test_loader, build_train_loader
    from framework.data.mapper import DatasetMapper
    from framework.engine.lr_scheduler import build_lr_scheduler
    from framework.engine.optim import build_optimizer

    return {
        "solver": build_optimizer,
        "lr_scheduler": build_lr_scheduler,
        "train_loader": build_train_loader,
        "test_loader": build_test_loader,
        "mapper": DatasetMapper,
    }


def register_config_groups(roots: dict[str, Registry] | None = None) -> list[str]:
    """Store each registered component as an option of each group that can hold it; return the groups."""
    cs = ConfigStore.instance()
    groups = []
    for group, registry in iter_groups(roots):
        groups.append(group)
        for name, _ in registry:
            cs.store(group=group, name=name, node=registry_schema(registry, name), provider="framework")
    for name, consumer in SECTIONS().items():
        cs.store(group="_schema", name=name, node=schema_for(consumer), provider="framework")
    return groups
