"""Configs shipped by plugins: YAML files in a plugin's ``configs/`` folder become config-group options.

A plugin folder (``projects/my_head/``) or an installed plugin package may hold a ``configs/``
folder laid out like the repository's: ``configs/model/my_preset.yaml`` is option ``my_preset`` of
group ``model``, ``configs/model/roi_heads/mask_head/MyHead_small.yaml`` an option of that group,
``configs/experiment/my_exp.yaml`` (with ``# @package _global_``) an experiment. They are stored in
Hydra's ConfigStore under the plugin's name as provider, so ``tools/train_net.py``, ``framework-train``
and :func:`framework.config.compose.compose` find them with no edit to ``configs/``.

An option is defined once: a plugin file with the path of a shipped config, of a registered
component's option, or of another plugin's file is an error that names both origins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from framework.errors import ConfigError

__all__ = ["PluginConfig", "find_plugin_configs", "register_plugin_configs"]

_PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)")


@dataclass(frozen=True)
class PluginConfig:
    """One YAML option shipped by a plugin."""

    plugin: str
    group: str  # e.g. "model/roi_heads/mask_head"
    name: str  # the option name (file stem)
    path: Path

    @property
    def option(self) -> str:
        return f"{self.group}/{self.name}"


def find_plugin_configs(folders: dict[str, Path]) -> list[PluginConfig]:
    """The YAML files under ``<folder>/configs/`` of each plugin, as group options."""
    out = []
    for plugin, folder in sorted(folders.items()):
        root = folder / "configs"
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root)
            if rel.parent == Path("."):
                raise ConfigError(
                    f"plugin {plugin!r}: {path} is not in a config group folder; put it under a group "
                    f"such as configs/model/ or configs/experiment/"
                )
            out.append(PluginConfig(plugin, rel.parent.as_posix(), rel.stem, path))
    return out


def _package(path: Path) -> str | None:
    """The ``# @package X`` header of a YAML file (it must come before any content)."""
    for line in path.read_text().splitlines():
        m = _PACKAGE_HEADER.match(line.strip())
        if m:
            return m.group(1)
        if line.strip() and not line.lstrip().startswith("#"):
            return None
    return None


def _existing_origin(cs: ConfigStore, builtin_dir: Path, c: PluginConfig) -> str | None:
    if (builtin_dir / c.group / f"{c.name}.yaml").is_file():
        return f"the shipped configs ({builtin_dir / c.group / c.name}.yaml)"
    try:
        stored = cs.list(c.group)
    except OSError:  # no such group in the store
        return None
    if f"{c.name}.yaml" in stored:
        # Stored by this very plugin before: a second setup() in this process, or a process that
        # received Hydra's state from its parent (a submitit task, a spawned rank).
        if cs.load(f"{c.group}/{c.name}.yaml").provider == c.plugin:
            return None
        return "a registered component of the same name"
    return None


def register_plugin_configs(folders: dict[str, Path], builtin_dir: Path) -> list[PluginConfig]:
    """Store every plugin YAML option in Hydra's ConfigStore; return them.

    Raises:
        ConfigError: an option already exists (shipped, a component, or another plugin's), naming both.
    """
    cs = ConfigStore.instance()
    configs = find_plugin_configs(folders)
    seen: dict[str, PluginConfig] = {}
    for c in configs:
        if c.option in seen:
            first = seen[c.option]
            raise ConfigError(
                f"config option {c.option!r} is shipped by two plugins: {first.plugin!r} ({first.path}) and "
                f"{c.plugin!r} ({c.path}); rename one of the files"
            )
        origin = _existing_origin(cs, builtin_dir, c)
        if origin is not None:
            raise ConfigError(
                f"config option {c.option!r} of plugin {c.plugin!r} ({c.path}) is already defined by {origin}; "
                f"rename the file (e.g. {c.name}_{c.plugin})"
            )
        seen[c.option] = c
    for c in configs:
        cs.store(group=c.group, name=c.name, node=OmegaConf.load(c.path), package=_package(c.path), provider=c.plugin)
    return configs
