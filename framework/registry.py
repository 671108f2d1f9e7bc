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

import contextvars
import inspect
from collections.abc import Mapping
from typing import Any, Iterator, Optional

from fvcore.common.registry import Registry as _FvcoreRegistry

from framework.config.schema import recorded, resolve_knobs, validate
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
    "BOX_PREDICTORS",
    "MASK_HEADS",
    "ROI_POOLERS",
    "META_ARCHITECTURES",
    "HOOKS",
    "OPTIMIZERS",
    "LR_SCHEDULERS",
    "EVALUATORS",
    "LOGGERS",
    "TRAIN_SAMPLERS",
    "AUGMENTATIONS",
    "TEST_TIME_AUGMENTATIONS",
    "ALL_REGISTRIES",
    "CONFIG_SECTIONS",
    "add_registry",
    "config_section",
]

class Registry(_FvcoreRegistry, RegistryBase):
    """An fvcore registry that knows how to build its entries from a config node.

    Args:
        name: e.g. ``"MASK_HEADS"``; used in error messages and listings.
        doc: one line saying what its entries are.
        extra_keys: config keys every entry's node may carry besides its knobs, consumed by the
            code that builds the entries and not passed to constructors; ``{key: (type, default)}``
            (e.g. the ``priority`` of hooks).
        config_key: where a run's config holds this registry's components at top level (``"model"``,
            ``"solver"``, ``"hooks"``), if anywhere; nested registries (mask heads...) are reached
            through their parent's ``Spec[...]`` knobs instead.
        group: the Hydra config group whose options are the entries (default: ``config_key``). A
            registry whose components config sections hold (``Spec[R]`` knobs of a section, such
            as the training sampler) needs one, without a ``config_key``: the section places it.
        keyed: the config holds a dict of components keyed by name (``hooks.<key>``, placed with
            ``- /<group>@<config_key>.<key>: <Name>``) rather than one component.
    """

    def __init__(
        self,
        name: str,
        doc: str = "",
        *,
        extra_keys: Mapping[str, tuple[Any, Any]] | None = None,
        config_key: str | None = None,
        group: str | None = None,
        keyed: bool = False,
    ) -> None:
        super().__init__(name)
        self.doc = doc
        self.extra_keys: dict[str, tuple[Any, Any]] = dict(extra_keys or {})
        if keyed and (config_key is None or group is None or group == config_key):
            raise ValueError(f"{name}: a keyed registry needs a config_key and a group of another name")
        self.config_key = config_key
        self.group = group or config_key
        self.keyed = keyed

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

    def class_of(self, spec: Any, *, path: str | None = None) -> type:
        """The class ``spec`` would build (a name, a mapping with ``name``, or a built object), without
        building it: for a parent that adapts to what kind of child it gets."""
        if isinstance(spec, str):
            return self.get(spec, path=path)
        if isinstance(spec, Mapping) or _is_dictconfig(spec):
            if "name" not in spec:
                raise ConfigError(f"config path '{path or self._name.lower()}' has no 'name' ({self._name} component)")
            return self.get(spec["name"], path=path)
        return type(spec)

    def __iter__(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return iter(sorted(self._obj_map.items()))

    # ------------------------------------------------------------------ building
    def build(
        self, spec: Any, /, *, path: str | None = None, offered: Mapping[str, Any] | None = None, **runtime: Any
    ) -> Any:
        """Build a component from ``spec`` and the parent's ``runtime`` arguments.

        Args:
            spec: a registered name, a mapping (dict or DictConfig) with ``name`` and knob values,
                or an already-built object (returned unchanged, so Python users can pass modules).
            path: where ``spec`` sits in the full config, for error messages (default: registry name).
            offered: runtime values a component *may* take: those its signature names are passed
                (how a run offers evaluators and loggers what it knows, e.g. ``output_dir``, without
                every entry having to accept all of it).
            runtime: the arguments only the parent knows (input shapes, number of classes, ...).
        """
        if not isinstance(spec, (str, Mapping)) and not _is_dictconfig(spec):
            return spec
        path = path or self._name.lower()
        memo = _validated.get()
        if memo is None:
            # The whole subtree first, so an error deep inside names its full config path
            # before any constructor runs; what it resolved is kept for the children's builds.
            memo = {}
            cls, kwargs = validate(spec, self, path=path, memo=memo)
        else:
            # Inside a parent's constructor: its validation resolved this node already, unless
            # the parent made up this spec itself (then it is resolved here).
            cls, kwargs = recorded(memo, spec, self) or resolve_knobs(self, spec, path=path)
        runtime_params = _runtime_params(cls)
        if offered is not None:
            runtime = {**{k: v for k, v in offered.items() if k in runtime_params}, **runtime}
            needed = _required_runtime_params(cls)
            if missing := [p for p in needed if p not in runtime]:
                raise TypeError(
                    f"{qualname(cls)} (at config path '{path}') needs runtime argument(s) {missing}, which its "
                    f"builder does not offer; it offers {sorted(offered)}"
                )
        unknown = set(runtime) - set(runtime_params)
        if unknown:
            raise TypeError(
                f"{qualname(cls)} got runtime argument(s) {sorted(unknown)} it does not take; "
                f"its runtime parameters are {runtime_params}"
            )
        token = _validated.set(memo)
        try:
            return cls(**runtime, **kwargs)
        finally:
            _validated.reset(token)

    def build_dict(self, specs: Any, /, *, path: str, offered: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Build each component of a keyed config dict (``evaluators``, ``loggers``), in key order.

        Args:
            specs: ``{key: spec}``; a spec is a registered name, a mapping with ``name`` (default:
                the key) and knobs, an already built object, or ``None`` to leave the entry out (how an
                entry is removed from the command line: ``loggers.tensorboard=null``).
            path: the dict's config path, for messages (``"loggers"``).
            offered: runtime values each component may take (see :meth:`build`).
        """
        if specs is None:
            return {}
        if _is_dictconfig(specs):
            from omegaconf import OmegaConf

            specs = OmegaConf.to_container(specs, resolve=True)
        if not isinstance(specs, Mapping):
            raise ConfigError(f"config path '{path}': expected a mapping of key -> {self._name} component, got {specs!r}")
        built = {}
        for key, spec in specs.items():
            if spec is None:
                continue
            if isinstance(spec, Mapping):
                spec = {"name": key, **spec}
            built[str(key)] = self.build(spec, path=f"{path}.{key}", offered=offered)
        return built


#: While a constructor called by :meth:`Registry.build` runs: what the outermost build's
#: validation resolved, node by node (the children that constructor builds are among them).
_validated: contextvars.ContextVar[dict | None] = contextvars.ContextVar("framework_registry_validated", default=None)


def _is_dictconfig(x: Any) -> bool:
    from omegaconf import DictConfig

    return isinstance(x, DictConfig)


def _runtime_params(obj: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _required_runtime_params(obj: Any) -> list[str]:
    return [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


# ---------------------------------------------------------------------- the registries
META_ARCHITECTURES = Registry(
    "META_ARCHITECTURES", "whole models: batched inputs -> losses / instances", config_key="model"
)
BACKBONES = Registry("BACKBONES", "feature extractors: image tensor -> dict of named feature maps")
ANCHOR_GENERATORS = Registry("ANCHOR_GENERATORS", "anchors per feature level")
RPN_HEADS = Registry("RPN_HEADS", "per-level objectness logits and anchor deltas")
PROPOSAL_GENERATORS = Registry("PROPOSAL_GENERATORS", "features -> proposals (+ losses in training)")
ROI_POOLERS = Registry("ROI_POOLERS", "multi-level RoI feature pooling")
BOX_HEADS = Registry("BOX_HEADS", "pooled RoI features -> box feature vector")
BOX_PREDICTORS = Registry(
    "BOX_PREDICTORS", "box feature -> class scores + box deltas, their losses and inference (Fast R-CNN outputs)"
)
MASK_HEADS = Registry(
    "MASK_HEADS", "RoI features (pooled, or the feature maps with mask_pooler=null) -> masks, their loss and inference"
)
ROI_HEADS = Registry("ROI_HEADS", "proposals + features -> detections (+ losses in training)")
OPTIMIZERS = Registry("OPTIMIZERS", "model -> torch optimizer over its parameter groups", config_key="solver")
LR_SCHEDULERS = Registry(
    "LR_SCHEDULERS", "lr multiplier over training progress in [0, 1] (fvcore ParamScheduler)", config_key="lr_scheduler"
)
HOOKS = Registry(
    "HOOKS",
    "training hooks: called before/after training and each step",
    # Any hook node may set its priority (an int or a Priority level name); build_hooks applies it.
    extra_keys={"priority": (Optional[Any], None)},
    config_key="hooks",
    group="hook",
    keyed=True,
)
EVALUATORS = Registry(
    "EVALUATORS", "dataset evaluators: model outputs -> metrics", config_key="evaluators", group="evaluator", keyed=True
)
LOGGERS = Registry(
    "LOGGERS", "event writers: training scalars, images and run info -> console, files, trackers",
    config_key="loggers", group="logger", keyed=True,
)
TRAIN_SAMPLERS = Registry(
    "TRAIN_SAMPLERS",
    "infinite streams of training dataset indices, seeded, sliced per process, replayable for exact resume",
    group="train_sampler",
)
AUGMENTATIONS = Registry(
    "AUGMENTATIONS", "one step of a data pipeline: image + ground truth -> image + ground truth (resize, flip, ...)"
)
TEST_TIME_AUGMENTATIONS = Registry(
    "TEST_TIME_AUGMENTATIONS",
    "model wrappers for evaluation: detections over augmented copies of each test image, merged",
    config_key="tta",
)

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
        BOX_PREDICTORS,
        MASK_HEADS,
        OPTIMIZERS,
        LR_SCHEDULERS,
        HOOKS,
        EVALUATORS,
        LOGGERS,
        TRAIN_SAMPLERS,
        AUGMENTATIONS,
        TEST_TIME_AUGMENTATIONS,
    )
}


def add_registry(registry: Registry) -> Registry:
    """Make a registry created elsewhere (datasets, a plugin's own) listable; with a ``config_key``
    it also gets its config group."""
    ALL_REGISTRIES.setdefault(registry._name, registry)
    return ALL_REGISTRIES[registry._name]


#: Plain config sections (not components): option name of the ``_schema`` group -> the function or
#: class whose keyword-only signature is the section's schema (``- _schema@input.train: mapper``).
CONFIG_SECTIONS: dict[str, Any] = {}


def config_section(name: str) -> Any:
    """Decorator: the keyword-only parameters of the decorated callable are the schema of config
    section ``name``, checked at compose time like a component's knobs."""

    def deco(consumer: Any) -> Any:
        if name in CONFIG_SECTIONS and CONFIG_SECTIONS[name] is not consumer:
            raise KeyError(
                f"config section {name!r} is already defined by {qualname(CONFIG_SECTIONS[name])}; "
                f"{qualname(consumer)} cannot define it too"
            )
        CONFIG_SECTIONS[name] = consumer
        return consumer

    return deco
