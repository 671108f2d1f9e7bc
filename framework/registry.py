"""Named registries: every extension point of the framework in one place.

A component is a callable (usually a class) whose signature follows one rule:

* parameters *before* the ``*`` are **runtime** arguments, passed by the parent component that
  builds it (input shapes, number of classes, ...);
* parameters *after* the ``*`` are **knobs**: keyword-only, type-annotated, with defaults where a
  sensible one exists. They are the component's config schema, and the only place its defaults live.

A knob whose value is itself a component is annotated ``Spec[REGISTRY]`` (optionally ``Optional``)
and its default is the registered name to use (or ``None``). The parent builds it with
``REGISTRY.build(spec, **runtime)``.

Example::

    @MASK_HEADS.register()
    class MyMaskHead(nn.Module):
        def __init__(self, input_shape: ShapeSpec, num_classes: int, *, num_conv: int = 4):
            ...

    head = MASK_HEADS.build({"name": "MyMaskHead", "num_conv": 2}, input_shape=..., num_classes=80)

Registration also makes the component a choice of every Hydra config group whose parent knob is
``Spec[MASK_HEADS]`` (see :mod:`framework.config.groups`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Iterator

from fvcore.common.registry import Registry as _FvcoreRegistry

from framework.config.schema import validate
from framework.config.signature import ComponentSpec, Knob, RegistryBase, Spec, knobs, qualname
from framework.errors import ConfigError, did_you_mean

__all__ = [
    "Registry",
    "Spec",
    "ComponentSpec",
    "Knob",
    "BACKBONES",
    "ANCHOR_GENERATORS",
    "PROPOSAL_GENERATORS",
    "RPN_HEADS",
    "ROI_HEADS",
    "BOX_HEADS",
    "MASK_HEADS",
    "ROI_POOLERS",
    "META_ARCHITECTURES",
    "ALL_REGISTRIES",
]

class Registry(_FvcoreRegistry, RegistryBase):
    """An fvcore registry that knows how to build its entries from a config node.

    Args:
        name: e.g. ``"MASK_HEADS"``; used in error messages and listings.
        doc: one line saying what its entries are.
        extra_keys: config keys every entry's node may carry besides its knobs, consumed by the
            code that builds the entries and not passed to constructors; ``{key: (type, default)}``
            (e.g. the ``priority`` of hooks).
    """

    def __init__(self, name: str, doc: str = "", *, extra_keys: Mapping[str, tuple[Any, Any]] | None = None) -> None:
        super().__init__(name)
        self.doc = doc
        self.extra_keys: dict[str, tuple[Any, Any]] = dict(extra_keys or {})

    # ------------------------------------------------------------------ registration
    def register(self, obj: Any = None, *, name: str | None = None) -> Any:  # type: ignore[override]
        """Register ``obj`` under ``name`` (default: ``obj.__name__``).

        Usable as ``@R.register()``, ``@R.register("Name")``, ``@R.register(name="Name")`` or
        ``R.register(obj)``.
        """
        if isinstance(obj, str):
            name, obj = obj, None

        def deco(o: Any) -> Any:
            key = name or o.__name__
            # Fail at import time on a malformed signature, naming the class.
            reserved = {"name", "defaults", *self.extra_keys}
            if clash := [k.name for k in knobs(o) if k.name in reserved]:
                raise TypeError(f"{qualname(o)}: {sorted(reserved)} are reserved config keys of {self._name}: {clash}")
            if key in self._obj_map and self._obj_map[key] is not o:
                raise KeyError(
                    f"{self._name}: {qualname(o)} cannot register the name {key!r}: it is already registered "
                    f"by {qualname(self._obj_map[key])} (two plugins, or a plugin and the framework, chose the "
                    "same name); pass register(name=...) to pick another one"
                )
            self._obj_map[key] = o
            return o

        return deco if obj is None else deco(obj)

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        return sorted(self._obj_map)

    def get(self, name: str, *, path: str | None = None) -> Any:  # type: ignore[override]
        """The entry registered as ``name``; a :class:`ConfigError` with close names otherwise."""
        if name in self._obj_map:
            return self._obj_map[name]
        where = f" (at config path '{path}')" if path else ""
        raise ConfigError(
            f"{self._name} has no component named {name!r}{where}.{did_you_mean(name, self._obj_map)} "
            f"Registered: {', '.join(self.names()) or '(none)'}."
        )

    def __iter__(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return iter(sorted(self._obj_map.items()))

    # ------------------------------------------------------------------ building
    def build(self, spec: Any, /, *, path: str | None = None, **runtime: Any) -> Any:
        """Build a component from ``spec`` and the parent's ``runtime`` arguments.

        Args:
            spec: a registered name, a mapping (dict or DictConfig) with ``name`` and knob values,
                or an already-built object (returned unchanged, so Python users can pass modules).
            path: where ``spec`` sits in the full config, for error messages (default: registry name).
            runtime: the arguments only the parent knows (input shapes, number of classes, ...).
        """
        if not isinstance(spec, (str, Mapping)) and not _is_dictconfig(spec):
            return spec
        path = path or self._name.lower()
        # The whole subtree first, so an error deep inside names its full config path.
        cls, kwargs = validate(spec, self, path=path)
        runtime_params = _runtime_params(cls)
        unknown = set(runtime) - set(runtime_params)
        if unknown:
            raise TypeError(
                f"{qualname(cls)} got runtime argument(s) {sorted(unknown)} it does not take; "
                f"its runtime parameters are {runtime_params}"
            )
        return cls(**runtime, **kwargs)


def _is_dictconfig(x: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(x, DictConfig)


def _runtime_params(obj: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


# ---------------------------------------------------------------------- the registries
BACKBONES = Registry("BACKBONES", "feature extractors: image tensor -> dict of named feature maps")
ANCHOR_GENERATORS = Registry("ANCHOR_GENERATORS", "anchors per feature level")
RPN_HEADS = Registry("RPN_HEADS", "per-level objectness logits and anchor deltas")
PROPOSAL_GENERATORS = Registry("PROPOSAL_GENERATORS", "features -> proposals (+ losses in training)")
ROI_POOLERS = Registry("ROI_POOLERS", "multi-level RoI feature pooling")
BOX_HEADS = Registry("BOX_HEADS", "pooled RoI features -> box feature vector")
MASK_HEADS = Registry("MASK_HEADS", "pooled RoI features -> per-class mask logits")
ROI_HEADS = Registry("ROI_HEADS", "proposals + features -> detections (+ losses in training)")
META_ARCHITECTURES = Registry("META_ARCHITECTURES", "whole models: batched inputs -> losses / instances")

ALL_REGISTRIES: dict[str, Registry] = {
    r._name: r
    for r in (
        META_ARCHITECTURES,
        BACKBONES,
        PROPOSAL_GENERATORS,
        ANCHOR_GENERATORS,
        RPN_HEADS,
        ROI_HEADS,
        ROI_POOLERS,
        BOX_HEADS,
        MASK_HEADS,
    )
}


def add_registry(registry: Registry) -> Registry:
    """Make a registry created elsewhere (datasets, hooks, evaluators, a plugin's own) listable."""
    ALL_REGISTRIES.setdefault(registry._name, registry)
    return ALL_REGISTRIES[registry._name]

