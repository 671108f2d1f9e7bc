"""Register every component as an option of the Hydra config groups that can hold it.

The group of a component is where its parent's ``Spec[R]`` knob sits in the config tree: the
``backbone`` knob of a meta-architecture under ``model`` makes group ``model/backbone`` hold every
entry of BACKBONES; FPN's ``bottom_up`` knob makes ``model/backbone/bottom_up`` hold them too.
Each option is the component's schema (:func:`framework.config.schema.schema_for`), so selecting
``model/backbone=FPN`` composes a node with every knob at its signature default. The plain
sections a part declares with :func:`framework.registry.config_section` become options of group
``_schema``. Nothing here names a component or a part: it all comes from the registries.
"""

from __future__ import annotations

from typing import Iterator

from hydra.core.config_store import ConfigStore

from framework.config.schema import registry_schema, schema_for
from framework.registry import ALL_REGISTRIES, CONFIG_SECTIONS, Registry, knobs

__all__ = ["config_roots", "iter_groups", "register_config_groups"]


def config_roots() -> dict[str, Registry]:
    """Top-level config groups that hold components, and the registry each draws from: every
    registry with a ``config_key`` (``model``, ``solver``, ``lr_scheduler``; for keyed dicts the
    entry group, ``hook``, ``evaluator``, ``logger``, whose options configs/<key>/*.yaml place under
    ``<key>.<name>``), and every registry with a ``group`` of its own that config sections place
    (``train_sampler``, under ``dataloader.train.sampler``)."""
    return {r.group: r for r in ALL_REGISTRIES.values() if r.group is not None}


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
                if knob.registry is None or knob.many or (knob.registry, knob.name) in chain:
                    continue  # a list of components has no group: its entries are validated one by one
                yield from walk(f"{group}/{knob.name}", knob.registry, chain + ((knob.registry, knob.name),))

    for key, registry in (roots or config_roots()).items():
        yield from walk(key, registry, ())


def register_config_groups(roots: dict[str, Registry] | None = None) -> list[str]:
    """Store each registered component as an option of each group that can hold it; return the groups."""
    cs = ConfigStore.instance()
    groups = []
    for group, registry in iter_groups(roots):
        groups.append(group)
        for name, _ in registry:
            cs.store(group=group, name=name, node=registry_schema(registry, name), provider="framework")
    for name, consumer in CONFIG_SECTIONS.items():
        cs.store(group="_schema", name=name, node=schema_for(consumer), provider="framework")
    return groups
