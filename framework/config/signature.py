"""Knobs from signatures: what a component's constructor says its config keys are.

A leaf of the config machinery: it imports no component and no registry (registries are recognised
through :class:`RegistryBase`), so :mod:`framework.registry` and :mod:`framework.config.schema`
both build on it without importing each other in a circle.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union

__all__ = ["ComponentSpec", "Knob", "RegistryBase", "Spec", "knobs", "qualname"]


class RegistryBase:
    """What :class:`framework.registry.Registry` is to the config machinery: ``Spec[R]`` takes one."""


#: How a component is given in a config: its registered name, or a mapping with ``name`` and knobs.
ComponentSpec = Union[str, Mapping[str, Any]]


class Spec:
    """``Spec[REGISTRY]`` annotates a knob whose value is a component of ``REGISTRY``;
    ``Sequence[Spec[REGISTRY]]`` one whose value is an ordered list of them (a pipeline)."""

    def __class_getitem__(cls, registry: "RegistryBase") -> Any:
        if not isinstance(registry, RegistryBase):
            raise TypeError(f"Spec[...] takes a Registry, got {registry!r}")
        return Annotated[ComponentSpec, registry]


@dataclasses.dataclass(frozen=True)
class Knob:
    """One keyword-only constructor parameter of a component: a config key."""

    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    registry: "RegistryBase | None" = None  # set for Spec[...] and Sequence[Spec[...]] knobs
    optional: bool = False  # the annotation admits None
    many: bool = False  # Sequence[Spec[...]]: a list of components, in order (no config group selects it)

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def qualname(obj: Any) -> str:
    """``module.QualName`` of a class or function, for messages."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _signature(obj: Any) -> inspect.Signature:
    return inspect.signature(obj)


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
        raise TypeError(f"cannot resolve the annotations of {qualname(obj)}: {e}") from e
    out = []
    forwards = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            raise TypeError(f"{qualname(obj)}: components take no *args (found {p}); runtime arguments are named")
        if p.kind is p.VAR_KEYWORD:
            forwards = True
            continue
        if p.kind is not p.KEYWORD_ONLY:
            continue
        if p.name not in hints:
            raise TypeError(f"{qualname(obj)}: knob {p.name!r} needs a type annotation")
        ann = hints[p.name]
        registry, optional, many = _spec_registry(ann)
        out.append(Knob(p.name, ann, p.default, registry, optional or p.default is None, many))
    if forwards:
        base = _base_component(obj)
        if base is None:
            raise TypeError(
                f"{qualname(obj)}: **kwargs must forward knobs to a base class with an explicit __init__, "
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


def _spec_registry(ann: Any) -> tuple[RegistryBase | None, bool, bool]:
    """(registry, optional, many) if ``ann`` is ``Spec[R]``, ``Sequence[Spec[R]]`` (many; also
    ``list[...]``, ``tuple[..., ...]``), or either under ``Optional``."""
    optional = False
    if typing.get_origin(ann) in (Union, types.UnionType):
        args = typing.get_args(ann)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            ann = rest[0]
    many = False
    if typing.get_origin(ann) in (list, tuple, Sequence, typing.List, typing.Tuple):
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        if len(args) != 1:
            return None, optional, False
        ann, many = args[0], True
    if typing.get_origin(ann) is Annotated:
        for meta in ann.__metadata__:
            if isinstance(meta, RegistryBase):
                return meta, optional, many
    return None, optional, False
