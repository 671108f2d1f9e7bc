"""Config schemas derived from component signatures, and validation of config nodes against them.

The keyword-only parameters of a registered component are its schema. :func:`schema_for` turns
them into an OmegaConf structured config (a dataclass), which gives type checking and unknown-key
errors both in Hydra composition and in :meth:`Registry.build` from a plain dict.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from framework.errors import ConfigError, did_you_mean
from framework.config.signature import Knob, RegistryBase, knobs

__all__ = ["schema_for", "section_consumer", "resolve_knobs", "validate", "validate_section", "omegaconf_type"]

_PRIMITIVES = (int, float, bool, str, bytes)


def omegaconf_type(ann: Any) -> Any:
    """Map a Python annotation to the closest type OmegaConf can check (``Any`` if none)."""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is Annotated:
        return Any  # Spec[...]: a nested component node, validated by its own schema
    if ann in _PRIMITIVES or (inspect.isclass(ann) and issubclass(ann, enum.Enum)):
        return ann
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = omegaconf_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if type(None) in args and inner is not Any else inner
    if origin is Literal:
        kinds = {type(a) for a in args}
        return kinds.pop() if len(kinds) == 1 and kinds <= set(_PRIMITIVES) else Any
    if origin in (list, tuple, Sequence, typing.List, typing.Tuple) or ann in (list, tuple):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            inner_types = {omegaconf_type(a) for a in args}
            inner = inner_types.pop() if len(inner_types) == 1 else Any
        else:
            inner = omegaconf_type(args[0]) if args else Any
        if typing.get_origin(inner) is list:
            # OmegaConf 2.3 rejects ints in List[List[float]] (flat List[float] converts them);
            # the constructor receives plain lists either way.
            inner = Any
        return List[inner]  # type: ignore[valid-type]
    if origin in (dict, Mapping) or ann is dict:
        if args and args[0] is str:
            return Dict[str, omegaconf_type(args[1])]  # type: ignore[misc]
        return Dict[Any, Any]
    return Any


def _to_plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so defaults fit OmegaConf containers."""
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _is_dict_type(typ: Any) -> bool:
    """``Dict[...]`` or ``Optional[Dict[...]]``."""
    if typing.get_origin(typ) is Union:
        typ = next((a for a in typing.get_args(typ) if a is not type(None)), typ)
    return typing.get_origin(typ) is dict


def _field(knob: Knob) -> tuple[str, Any, Any]:
    typ = omegaconf_type(knob.annotation)
    if knob.many:
        # A list of component nodes, in order: each entry is validated by its own schema
        # (validate), since no config group can place a node inside a list.
        typ = Optional[List[Any]] if knob.optional else List[Any]
        if knob.required:
            return knob.name, typ, dataclasses.field(default=MISSING)
        if knob.default is None:
            return knob.name, typ, dataclasses.field(default=None)
        return knob.name, typ, dataclasses.field(default_factory=functools.partial(_to_plain, knob.default))
    if knob.registry is not None:
        # The node is filled by the config group (Hydra) or by the signature default (Python).
        typ = Optional[Any] if knob.optional else Any
        default = None if knob.default is None else MISSING
        return knob.name, typ, dataclasses.field(default=default)
    if knob.required:
        return knob.name, typ, dataclasses.field(default=MISSING)
    default = _to_plain(knob.default)
    if default is None and _is_dict_type(typ):
        # OmegaConf 2.3 cannot merge a mapping into an Optional[Dict] node holding None (it fails
        # inside OmegaConf on the command line); Any accepts it, and resolve_knobs still gets a dict.
        typ = Any
    if default is None and typ is not Any and typing.get_origin(typ) is not Union:
        typ = Optional[typ]
    if isinstance(default, (list, dict)):
        return knob.name, typ, dataclasses.field(default_factory=functools.partial(_to_plain, default))
    return knob.name, typ, dataclasses.field(default=default)


@functools.lru_cache(maxsize=None)
def schema_for(component: Any, name: str | None = None, extra_keys: tuple[tuple[str, Any, Any], ...] = ()) -> type:
    """A dataclass with one field per knob of ``component`` (plus ``name`` when given, and ``extra_keys``).

    Without ``name`` this is the schema of a plain config section (e.g. ``optimizer``: the knobs
    of ``build_optimizer``).

    Knobs that are nested components (``Spec[R]``) become ``Any`` fields; when their default is a
    registered name, the dataclass also carries a Hydra ``defaults`` list selecting that option of
    the nested config group, so composing ``group=Name`` yields a complete node. In a component
    that group is the knob's, below the component's own (``model/backbone``); a section is placed
    anywhere (``- _schema@dataloader.train: train_loader``), so its component knobs select from
    their registry's top-level group instead, placed under the section
    (``/train_sampler@sampler``; from the command line
    ``train_sampler@dataloader.train.sampler=RepeatFactorTrainingSampler``). Lists of components
    (``Sequence[Spec[R]]``) are plain list fields: no group selects them.
    """
    fields: list[Any] = []
    defaults: list[Any] = ["_self_"]
    for knob in knobs(component):
        fields.append(_field(knob))
        if knob.registry is None or knob.many or not (isinstance(knob.default, str) or knob.default is None):
            continue
        if name is not None:
            defaults.append({knob.name: knob.default})
            continue
        group = getattr(knob.registry, "group", None)
        if group is None:
            raise TypeError(f"config section {getattr(component, '__qualname__', component)}: knob {knob.name!r} is a "
                            f"{knob.registry._name} component, but that registry has no config group to select "
                            "it from; give the registry a group (Registry(..., group=...))")
        defaults.append({f"/{group}@{knob.name}": knob.default})
    fields += [(key, typ, dataclasses.field(default=default)) for key, typ, default in extra_keys]
    title = name or getattr(component, "__name__", "Section")
    head = [] if name is None else [("name", str, dataclasses.field(default=name))]
    if len(defaults) > 1:
        head.insert(0, ("defaults", List[Any], dataclasses.field(default_factory=functools.partial(list, defaults))))
    cls = dataclasses.make_dataclass(f"{title}Config", head + fields)
    cls.__doc__ = f"Config schema of {title}, generated from its signature."
    if name is None:
        # How validate_config recognises a composed section node (OmegaConf keeps its type).
        cls.__framework_section__ = component
    return cls


def section_consumer(node_type: Any) -> Any:
    """The callable whose signature is the schema of a config section node of type ``node_type``
    (``OmegaConf.get_type(node)``), or None if the node is no section."""
    return getattr(node_type, "__framework_section__", None)


def registry_schema(registry: RegistryBase, name: str) -> type:
    """The schema of the entry ``name`` of ``registry``, with the registry's extra keys."""
    extra = tuple((k, typ, default) for k, (typ, default) in registry.extra_keys.items())
    return schema_for(registry.get(name), name, extra)


def _as_mapping(spec: Any, path: str) -> dict:
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"config path '{path}': expected a component name or a mapping, got {spec!r}")
    spec = dict(spec)
    spec.pop("defaults", None)
    if "name" not in spec or spec["name"] is None:
        raise ConfigError(f"config path '{path}': missing 'name' (which component to build)")
    return spec


def resolve_knobs(registry: RegistryBase, spec: Any, *, path: str) -> tuple[Any, dict]:
    """Validate ``spec`` against the schema of the component it names.

    Returns:
        (component, kwargs): the registered callable and its keyword arguments; knobs that the
        config leaves unset are omitted so the signature default applies.
    Raises:
        ConfigError: unknown component name, unknown key, wrong type, missing required value or a
        value outside a ``Literal[...]``; the message names ``path`` and the closest valid names.
    """
    spec = _as_mapping(spec, path)
    name = spec.pop("name")
    component = registry.get(name, path=f"{path}.name")
    ks = {k.name: k for k in knobs(component)}
    for key in registry.extra_keys:
        spec.pop(key, None)  # consumed by whoever builds the entries, not a constructor argument
    for key in spec:
        if key not in ks:
            raise ConfigError(
                f"config path '{path}.{key}': {name} ({registry._name}) has no knob {key!r}."
                f"{did_you_mean(key, ks)} Its knobs: {', '.join(ks) or '(none)'}."
            )
    schema = OmegaConf.structured(schema_for(component, name))
    try:
        merged = OmegaConf.merge(schema, {k: v for k, v in spec.items() if not _is_spec(ks[k]) or v is None})
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        raise ConfigError(f"config path '{path}.{key}': {_first_line(e)}" if key else f"config path '{path}': {_first_line(e)}") from None
    kwargs: dict[str, Any] = {}
    for key, knob in ks.items():
        if _is_spec(knob) and key in spec and spec[key] is not None:
            if knob.many and not isinstance(spec[key], (list, tuple)):
                raise ConfigError(f"config path '{path}.{key}': expected a list of {knob.registry._name} components "
                                  f"(names or mappings with 'name'), got {spec[key]!r}")
            kwargs[key] = spec[key]
            continue
        if OmegaConf.is_missing(merged, key):
            if knob.required:
                raise ConfigError(f"config path '{path}.{key}': required value of {name} is missing")
            continue
        value = merged[key]
        kwargs[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        _check_literal(knob, kwargs[key], f"{path}.{key}")
    return component, kwargs


def _is_spec(knob: Knob) -> bool:
    return knob.registry is not None


def _check_literal(knob: Knob, value: Any, path: str) -> None:
    ann = knob.annotation
    if typing.get_origin(ann) in (Union, types.UnionType):
        if value is None:
            return
        ann = next((a for a in typing.get_args(ann) if typing.get_origin(a) is Literal), ann)
    if typing.get_origin(ann) is Literal:
        allowed = typing.get_args(ann)
        if value not in allowed:
            raise ConfigError(
                f"config path '{path}': {value!r} is not one of {list(allowed)}.{did_you_mean(str(value), map(str, allowed))}"
            )


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def validate(spec: Any, registry: RegistryBase, *, path: str, memo: dict | None = None) -> tuple[Any, dict]:
    """Check a whole component tree (names, keys, types, required values) without building it.

    Returns :func:`resolve_knobs` of the root, so a caller that goes on to build it resolves once.
    With ``memo``, every node's result is also recorded there (see :func:`recorded`), so that
    building the children does not resolve them again.
    """
    component, kwargs = resolve_knobs(registry, spec, path=path)
    if memo is not None and isinstance(spec, (str, dict)):  # the specs a parent receives (a root
        # DictConfig is never looked up); with a copy, so one edited in place is resolved afresh
        memo[(id(spec), id(registry))] = (spec, copy.deepcopy(spec), component, kwargs)
    for knob in knobs(component):
        if knob.registry is not None:
            _validate_children(knob, kwargs.get(knob.name, knob.default), path=f"{path}.{knob.name}", memo=memo)
    return component, kwargs


def validate_section(node: Any, consumer: Any, *, path: str) -> None:
    """Check the components a config section holds (its ``Spec[R]`` and ``Sequence[Spec[R]]``
    knobs: ``dataloader.train.sampler``, each of ``input.train.augmentations``) like
    :func:`validate` checks a component's. The section's other keys are typed by its schema,
    which Hydra checks when it composes."""
    for knob in knobs(consumer):
        if knob.registry is None:
            continue
        if isinstance(node, DictConfig):
            child = knob.default if knob.name not in node or OmegaConf.is_missing(node, knob.name) else node[knob.name]
        else:
            child = node.get(knob.name, knob.default)
        if isinstance(child, (DictConfig, ListConfig)):
            child = OmegaConf.to_container(child, resolve=True)
        _validate_children(knob, child, path=f"{path}.{knob.name}", memo=None)


def _validate_children(knob: Knob, child: Any, *, path: str, memo: dict | None) -> None:
    """Validate the component(s) ``child`` a ``Spec`` knob holds (a list of them for ``many``)."""
    registry = knob.registry
    if child is None:
        if not knob.optional:
            raise ConfigError(f"config path '{path}': a {registry._name} component is required")
        return
    if child is inspect.Parameter.empty:
        what = f"a list of {registry._name} components" if knob.many else f"a {registry._name} component"
        raise ConfigError(f"config path '{path}': {what} is required")
    if not knob.many:
        if isinstance(child, (str, Mapping, DictConfig)):
            validate(child, registry, path=path, memo=memo)
        return
    if not isinstance(child, (list, tuple, ListConfig)):
        raise ConfigError(f"config path '{path}': expected a list of {registry._name} components (names or "
                          f"mappings with 'name'), got {child!r}")
    for i, entry in enumerate(child):
        if entry is None:
            raise ConfigError(f"config path '{path}.{i}': a {registry._name} component is required, got null")
        if isinstance(entry, (str, Mapping, DictConfig)):
            validate(entry, registry, path=f"{path}.{i}", memo=memo)


def recorded(memo: dict, spec: Any, registry: RegistryBase) -> tuple[Any, dict] | None:
    """What :func:`validate` resolved for this very ``spec`` object (not an equal one), unchanged
    since, under ``registry``; None if it did not see it so."""
    hit = memo.get((id(spec), id(registry)))
    if hit is None or hit[0] is not spec or hit[1] != spec:
        return None
    return hit[2], dict(hit[3])
