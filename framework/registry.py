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

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Iterator, Union

from fvcore.common.registry import Registry as _FvcoreRegistry

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

#: How a component is given in a config: its registered name, or a mapping with ``name`` and knobs.
ComponentSpec = Union[str, Mapping[str, Any]]


class Spec:
    """``Spec[REGISTRY]`` annotates a knob whose value is a component of ``REGISTRY``."""

    def __class_getitem__(cls, registry: "Registry") -> Any:
        if not isinstance(registry, Registry):
            raise TypeError(f"Spec[...] takes a Registry, got {registry!r}")
        return Annotated[ComponentSpec, registry]


@dataclasses.dataclass(frozen=True)
class Knob:
    """One keyword-only constructor parameter of a component: a config key."""

    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    registry: "Registry | None" = None  # set for Spec[...] knobs
    optional: bool = False  # the annotation admits None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


class Registry(_FvcoreRegistry):
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
                raise TypeError(f"{_qualname(o)}: {sorted(reserved)} are reserved config keys of {self._name}: {clash}")
            if key in self._obj_map and self._obj_map[key] is not o:
                raise KeyError(
                    f"{self._name}: {_qualname(o)} cannot register the name {key!r}: it is already registered "
                    f"by {_qualname(self._obj_map[key])} (two plugins, or a plugin and the framework, chose the "
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
        from framework.config.schema import validate  # local: config imports this module

        path = path or self._name.lower()
        # The whole subtree first, so an error deep inside names its full config path.
        cls, kwargs = validate(spec, self, path=path)
        runtime_params = _runtime_params(cls)
        unknown = set(runtime) - set(runtime_params)
        if unknown:
            raise TypeError(
                f"{_qualname(cls)} got runtime argument(s) {sorted(unknown)} it does not take; "
                f"its runtime parameters are {runtime_params}"
            )
        return cls(**runtime, **kwargs)


def _is_dictconfig(x: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(x, DictConfig)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _signature(obj: Any) -> inspect.Signature:
    return inspect.signature(obj)


def _runtime_params(obj: Any) -> list[str]:
    return [
        p.name
        for p in _signature(obj).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def knobs(obj: Any) -> list[Knob]:
    """The config knobs of a component: its keyword-only parameters, in signature order.

    A class whose ``__init__`` takes ``**kwargs`` forwards them to its base class: it inherits the
    knobs of the nearest base with its own ``__init__`` (after its own, which win on a name clash),
    so a subclass declares only what it adds::

        class MyHead(MaskRCNNConvUpsampleHead):
            def __init__(self, input_shape, num_classes, *, dropout: float = 0.0, **kwargs):
                super().__init__(input_shape, num_classes, **kwargs)   # num_conv, conv_dim, ...
    """
    cached = getattr(obj, "__framework_knobs__", None)
    if cached is not None and cached[0] is obj:
        return cached[1]
    sig = _signature(obj)
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as e:  # unresolvable forward reference: say where
        raise TypeError(f"cannot resolve the annotations of {_qualname(obj)}: {e}") from e
    out = []
    forwards = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            raise TypeError(f"{_qualname(obj)}: components take no *args (found {p}); runtime arguments are named")
        if p.kind is p.VAR_KEYWORD:
            forwards = True
            continue
        if p.kind is not p.KEYWORD_ONLY:
            continue
        if p.name not in hints:
            raise TypeError(f"{_qualname(obj)}: knob {p.name!r} needs a type annotation")
        ann = hints[p.name]
        registry, optional = _spec_registry(ann)
        out.append(Knob(p.name, ann, p.default, registry, optional or p.default is None))
    if forwards:
        base = _base_component(obj)
        if base is None:
            raise TypeError(
                f"{_qualname(obj)}: **kwargs must forward knobs to a base class with an explicit __init__, "
                "and there is none; declare every knob as a keyword-only parameter"
            )
        own = {k.name for k in out}
        out += [k for k in knobs(base) if k.name not in own]
    try:
        obj.__framework_knobs__ = (obj, out)
    except (AttributeError, TypeError):
        pass
    return out


def _base_component(obj: Any) -> Any:
    """The nearest base class of ``obj`` with its own ``__init__``, outside torch and ``object``."""
    if not inspect.isclass(obj):
        return None
    for klass in obj.__mro__[1:]:
        if klass is object or klass.__module__.split(".")[0] == "torch":
            return None
        if "__init__" in vars(klass):
            return klass
    return None


def _spec_registry(ann: Any) -> tuple[Registry | None, bool]:
    """(registry, optional) if ``ann`` is ``Spec[R]`` or ``Optional[Spec[R]]``."""
    optional = False
    if typing.get_origin(ann) in (Union, types.UnionType):
        args = typing.get_args(ann)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            ann = rest[0]
    if typing.get_origin(ann) is Annotated:
        for meta in ann.__metadata__:
            if isinstance(meta, Registry):
                return meta, optional
    return None, optional


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

