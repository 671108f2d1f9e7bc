"""Compose and validate configs, with errors that name the path and the closest valid choices.

Hydra itself rejects unknown keys and wrong types at compose time (the component schemas are
structured configs); this module adds what Hydra does not say: *did you mean ...?*, and the
registry checks of component names. :func:`check_command_line` runs the same composition before
``hydra.main`` takes over, so ``--cfg job`` and multirun sweeps fail on a typo before any job starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf

from framework.config.groups import config_roots, register_config_groups
from framework.config.plugin_configs import register_plugin_configs
from framework.config.plugins import REPO_ROOT, discover_plugins, plugin_folders
from framework.config.schema import section_consumer, validate, validate_section
from framework.errors import ConfigError, did_you_mean

__all__ = [
    "CONFIG_DIR",
    "setup",
    "compose",
    "validate_config",
    "check_command_line",
    "available_groups",
    "unknown_key_hint",
]

def _builtin_config_dir() -> Path:
    """The repository's ``configs/`` (a clone, an editable install), else the copy that
    ``pip install .`` puts inside the package (``framework/configs``, see pyproject.toml)."""
    repo = REPO_ROOT / "configs"
    if (repo / "train.yaml").is_file():
        return repo
    return Path(__file__).resolve().parents[1] / "configs"


#: Where train.yaml and the config groups are; users add their own folders with ``search_path``
#: (``--config-dir`` on the command line).
CONFIG_DIR = _builtin_config_dir()
_setup_done = False


def setup() -> None:
    """Import the built-in components and plugins, and make them Hydra config-group options."""
    global _setup_done
    if _setup_done:
        return
    # The composition root: importing the parts registers their components and config sections.
    import framework.data.build  # noqa: F401  (loader sections)
    import framework.data.mapper  # noqa: F401  (mapper section)
    import framework.engine.ddp  # noqa: F401  (ddp section)
    import framework.engine.hooks  # noqa: F401  (hooks)
    import framework.engine.launch  # noqa: F401  (dist section)
    import framework.engine.lr_scheduler  # noqa: F401  (LR schedules)
    import framework.engine.optim  # noqa: F401  (optimizers)
    import framework.evaluation  # noqa: F401  (evaluators)
    import framework.modeling  # noqa: F401  (model components)
    import framework.utils.trackers  # noqa: F401  (loggers; imports their packages only when built)

    discover_plugins()
    register_config_groups()
    register_plugin_configs(plugin_folders(), CONFIG_DIR)
    _setup_done = True


def validate_config(cfg: DictConfig) -> None:
    """Check every component subtree (``model``, ``solver``, each of ``hooks``...) against the
    registries and schemas, and the components held by config sections (``dataloader.train.sampler``,
    each entry of ``input.train.augmentations``)."""
    for registry in config_roots().values():
        key = registry.config_key
        if key is None or key not in cfg or cfg[key] is None:
            continue  # a registry whose entries only sit inside other nodes (train_sampler)
        if not registry.keyed:
            validate(cfg[key], registry, path=key)
            continue
        for name, spec in cfg[key].items():
            if spec is not None:
                validate({"name": name, **spec} if isinstance(spec, DictConfig) else spec, registry, path=f"{key}.{name}")
    _validate_sections(cfg, "")


def _validate_sections(node: DictConfig, path: str) -> None:
    """Find the config section nodes in ``node`` (by the schema type OmegaConf keeps for them,
    wherever the defaults list placed them) and validate the components they hold."""
    consumer = section_consumer(OmegaConf.get_type(node))
    if consumer is not None:
        validate_section(node, consumer, path=path)
    for key, child in node.items_ex(resolve=False):
        if isinstance(child, DictConfig):  # items_ex gives None, "???" and interpolations as plain values
            _validate_sections(child, f"{path}.{key}" if path else str(key))


def compose(
    overrides: Sequence[str] = (),
    *,
    config_name: str = "train",
    config_dir: Path | None = None,
    search_path: Sequence[str | Path] = (),
) -> DictConfig:
    """Compose ``config_name`` with Hydra's Compose API, then validate it (tests, notebooks, preflight).

    Args:
        config_dir: the primary config folder (default :data:`CONFIG_DIR`).
        search_path: more config folders, searched before it (what ``--config-dir`` adds): your
            own presets and experiments, or replacements of shipped ones.
    """
    setup()
    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    overrides = list(overrides) + _search_path_override(search_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        except (ConfigCompositionException, MissingConfigException) as e:
            raise ConfigError(_explain(e, list(overrides), config_name)) from None
    validate_config(cfg)
    return cfg


def _search_path_override(folders: Sequence[str | Path]) -> list[str]:
    for folder in folders:
        if not Path(folder).expanduser().is_dir():
            raise ConfigError(f"config folder {folder} (--config-dir / search_path) not found")
    if not folders:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{Path(f).expanduser().resolve()}" for f in folders) + "]"]


def check_command_line(
    overrides: Sequence[str],
    *,
    config_name: str = "train",
    config_dir: Path | None = None,
    search_path: Sequence[str | Path] = (),
) -> None:
    """Compose every choice a (multirun) command line can make; raise :class:`ConfigError` on the first bad one.

    A sweep that can be enumerated (``a=1,2``, ``choice(...)``, ``range(...)``, ``glob(...)`` over a
    group's options) is checked value by value, the other overrides at their first value, so
    ``-m model/roi_pooler=ROIAlign,ROIAlgnV2`` fails before the first job runs. An ``interval(...)``
    sweep (for sweepers such as Optuna, which draw its values) is not composed; its key must exist.
    """
    setup()
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    firsts, variants, intervals = [], [], []
    for o in parsed:
        if o.is_interval_sweep():
            intervals.append(o.get_key_element())
        elif o.is_sweep_override():
            values = _sweep_values(o, config_name=config_name, config_dir=config_dir, search_path=search_path)
            firsts.append(f"{o.get_key_element()}={values[0]}")
            variants.append((len(firsts) - 1, [f"{o.get_key_element()}={v}" for v in values[1:]]))
        else:
            firsts.append(o.input_line)
    where = dict(config_name=config_name, config_dir=config_dir, search_path=search_path)
    cfg = compose(firsts, **where)
    for key in intervals:
        _check_key_exists(cfg, key.lstrip("+"))
    for index, alternatives in variants:
        for alt in alternatives:
            compose(firsts[:index] + [alt] + firsts[index + 1 :], **where)


def _sweep_values(
    override, *, config_name: str, config_dir: Path | None, search_path: Sequence[str | Path] = ()
) -> list[str]:
    """The values of an enumerable sweep; a ``glob`` is matched against the group's options,
    including those of ``search_path`` folders (``--config-dir``) and of plugins."""
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(config_dir or CONFIG_DIR).resolve()), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            options = loader.get_group_options(
                override.key_or_group, config_name=config_name, overrides=_search_path_override(search_path)
            )
        values = override.value().filter(options)
        if not values:
            raise ConfigError(f"sweep {override.input_line!r} matches no option of group {override.key_or_group!r}")
        return values
    return list(override.sweep_string_iterator())


def unknown_key_hint(cfg: DictConfig, key: str) -> str:
    """For a dotted ``key`` that ``cfg`` lacks: ``" Did you mean 'x'? Keys under 'a.b': x, y."``."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    options = list(node.keys()) if isinstance(node, DictConfig) else []
    return f"{did_you_mean(leaf, options)} Keys under '{parent or '<root>'}': {', '.join(map(str, options))}."


def _check_key_exists(cfg: DictConfig, key: str) -> None:
    if OmegaConf.select(cfg, key, default=_MISSING_KEY) is _MISSING_KEY:
        raise ConfigError(f"sweep over {key!r}: no such key.{unknown_key_hint(cfg, key)}")


_MISSING_KEY = object()


# --------------------------------------------------------------------------- error explanations
def available_groups() -> list[str]:
    """Every config group path Hydra can see (files in configs/, schemas in the ConfigStore)."""
    loader = GlobalHydra.instance().config_loader()
    out: list[str] = []

    def walk(parent: str) -> None:
        for g in loader.list_groups(parent):
            path = f"{parent}/{g}" if parent else g
            out.append(path)
            walk(path)

    walk("")
    return sorted(out)


def _explain(e: Exception, overrides: list[str], config_name: str) -> str:
    msg = str(e).strip()
    if e.__cause__ is not None and str(e.__cause__).strip() not in msg:
        msg = f"{msg}\n{str(e.__cause__).strip()}"
    m = re.search(r"Could not override '([^']+)'", msg) or re.search(r"Error merging override ([^=\s]+)=", msg)
    hint = ""
    if m:
        key = m.group(1)
        if "No match in the defaults list" in msg or "/" in key:
            hint = did_you_mean(key.lstrip("+~"), available_groups())
        else:
            hint = _key_hint(key, [o for o in overrides if not _override_key(o) == key], config_name)
    elif "Available options" in msg or "Could not find" in msg:
        wanted = re.search(r"Could not (?:find|load) '([^']+)'", msg)
        options = re.findall(r"^\t(\S+)", msg, flags=re.M)
        if wanted:
            extra = next((x for prefix, x in _OPTIONAL_EXTRAS.items() if wanted.group(1).startswith(prefix)), None)
            if extra is not None:
                hint = (f"'{wanted.group(1)}' comes with an optional extra of this package: "
                        f"pip install \"framework[{extra}]\" (from a clone: pip install -e \".[{extra}]\")")
            else:
                hint = did_you_mean(wanted.group(1).rsplit("/", 1)[-1], options) or did_you_mean(
                    wanted.group(1), available_groups()
                )
    return f"{msg}\n{hint.strip()}" if hint else msg


#: Config options that Hydra plugins provide, and the extra (pyproject.toml) that installs each.
_OPTIONAL_EXTRAS = {"hydra/launcher/submitit_": "slurm", "hydra/sweeper/optuna": "optuna"}


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _key_hint(key: str, other_overrides: list[str], config_name: str) -> str:
    """Closest existing key to ``key``, looked up in the config composed without the bad override."""
    try:
        # Hydra's own keys (hydra.launcher.*, hydra.sweeper.*) are only there when asked for.
        cfg = hydra_compose(config_name=config_name, overrides=other_overrides,
                            return_hydra_config=key.startswith("hydra."))
    except Exception:
        return ""
    node: object = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]  # an entry of a list of components (input.train.augmentations.0)
            continue
        if isinstance(node, DictConfig):
            where = ".".join(parts[:i]) or "<root>"
            return did_you_mean(part, list(node.keys())) + f" Keys under '{where}': {', '.join(map(str, node.keys()))}."
        if node is None and i > 0:  # an unselected component (tta: null): its knobs are not there yet
            where = ".".join(parts[:i])
            return f"'{where}' is null in this config: select a component first ({where}=<name>), then set its knobs."
        break
    return ""

