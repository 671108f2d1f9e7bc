"""Plugin discovery: components registered outside ``framework/`` become selectable from the CLI.

Two sources, both imported before Hydra composes (so their components are config-group options):

* **entry points** in the group ``framework.plugins``: a pip-installed package declares
  ``[project.entry-points."framework.plugins"] my_plugin = "my_package.module"``;
* **project folders**: every sub-folder with an ``__init__.py`` of the ``projects/`` directory of this
  repository, of the current working directory, and of each path in ``$FRAMEWORK_PROJECTS``
  (``os.pathsep``-separated). A folder ``projects/foo`` is imported as the module ``projects.foo``.

Importing a plugin is all it takes: its ``@REGISTRY.register()`` decorators do the rest.
A plugin that fails to import raises, naming the plugin: a silently missing component would
surface later as a confusing "unknown name" error.

A plugin may also ship YAML configs in a ``configs/`` folder beside its ``__init__.py`` (model
presets, experiments, component options), laid out like the repository's ``configs/``; see
:mod:`framework.config.plugin_configs`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from pathlib import Path

__all__ = ["ENTRY_POINT_GROUP", "project_dirs", "discover_plugins", "plugin_folders"]

ENTRY_POINT_GROUP = "framework.plugins"
REPO_ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
_loaded: dict[str, str] = {}
_folders: dict[str, Path] = {}  # plugin name -> the folder of its package


def project_dirs() -> list[Path]:
    """The ``projects/`` folders searched for plugins, first match of a name wins."""
    dirs = [REPO_ROOT / "projects", Path.cwd() / "projects"]
    dirs += [Path(p) for p in os.environ.get("FRAMEWORK_PROJECTS", "").split(os.pathsep) if p]
    out: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def _import_project(folder: Path) -> None:
    name = f"projects.{folder.name}"
    if name in sys.modules:
        return
    if "projects" not in sys.modules:
        # A namespace-like parent so plugins can use relative imports (from .heads import ...).
        parent = importlib.util.module_from_spec(importlib.machinery.ModuleSpec("projects", None, is_package=True))
        parent.__path__ = []  # type: ignore[attr-defined]
        sys.modules["projects"] = parent
    sys.modules["projects"].__path__.append(str(folder.parent))  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ImportError(f"plugin project '{folder}' failed to import: {e}") from e


def discover_plugins() -> dict[str, str]:
    """Import every plugin once; return ``{plugin name: where it came from}``."""
    for folder_root in project_dirs():
        for folder in sorted(folder_root.iterdir()):
            if (folder / "__init__.py").is_file() and folder.name not in _loaded:
                _import_project(folder)
                _loaded[folder.name] = str(folder)
                _folders[folder.name] = folder
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _loaded:
            continue
        try:
            ep.load()
        except Exception as e:
            raise ImportError(f"plugin entry point '{ep.name} = {ep.value}' failed to import: {e}") from e
        _loaded[ep.name] = f"entry point {ep.value}"
        # The top-level package of the entry point's module: its folder may hold configs/. A
        # single-file module has no folder of its own (it sits in site-packages), so no configs.
        top = sys.modules.get(ep.module.split(".")[0])
        if top is not None and getattr(top, "__path__", None) and getattr(top, "__file__", None):
            _folders[ep.name] = Path(top.__file__).resolve().parent
    return dict(_loaded)


def plugin_folders() -> dict[str, Path]:
    """``{plugin name: folder of its package}`` of the plugins imported so far."""
    return dict(_folders)
