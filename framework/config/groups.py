"""Register every component as an option of the Hydra config groups that can hold it.

The group of a component is where its parent's ``Spec[R]`` knob sits in the config tree: the
``backbone`` knob of a meta-architecture under ``model`` makes group ``model/backbone`` hold every
entry of BACKBONES; FPN's ``bottom_up`` knob makes ``model/backbone/bottom_up`` hold them too.
Each option is the component's schema (:func:`framework.config.schema.schema_for`), so selecting
``model/backbone=FPN`` composes a node with every knob at its signature default.
"""

from __future__ import annotations

from typing import Iterator

from hydra.core.config_store import ConfigStore

from framework.config.schema import schema_for
from framework.registry import META_ARCHITECTURES, Registry, knobs

__all__ = ["ROOTS", "iter_groups", "register_config_groups"]

#: Top-level config keys that hold a component, and the registry they draw from.
ROOTS: dict[str, Registry] = {"model": META_ARCHITECTURES}


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

    for key, registry in (roots or ROOTS).items():
        yield from walk(key, registry, ())


def register_config_groups(roots: dict[str, Registry] | None = None) -> list[str]:
    """Store each registered component as an option of each group that can hold it; return the groups."""
    cs = ConfigStore.instance()
    groups = []
    for group, registry in iter_groups(roots):
        groups.append(group)
        for name, component in registry:
            cs.store(group=group, name=name, node=schema_for(component, name), provider="framework")
    return groups
