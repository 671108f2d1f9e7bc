"""Plugin discovery: components registered outside ``framework/`` become selectable from the CLI.

Two sources, both imported before Hydra composes (so their components are config-group options):

* **entry points** in the group ``framework.plugins``: a pip-installed package declares
  ``[project.entry-points."framework.plugins"] my_plugin = "my_package.module"``;
* **project folders**: every sub-folder with an ``__init__.py`` of the ``projects/`` directory of this
  repository (in a clone), and of each folder named by ``--projects DIR[:DIR...]`` on a command line
  (:func:`add_project_dirs`) or listed in ``$FRAMEWORK_PROJECTS`` (``os.pathsep``-separated). A
  folder ``projects/foo`` is imported as the module ``projects.foo``. The ``projects/`` of the
  current directory is searched only when named that way: importing is running code, and a command
  must not run whatever lies in the directory it happens to be started from.

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
from typing import Sequence, Union

from framework.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROJECTS_FLAG",
    "PROJECTS_ENV",
    "project_dirs",
    "add_project_dirs",
    "split_projects_option",
    "split_projects_flag",
    "discover_plugins",
    "plugin_folders",
]

ENTRY_POINT_GROUP = "framework.plugins"
#: The command-line option of the tools that adds projects folders: ``--projects DIR[:DIR...]``.
PROJECTS_FLAG = "--projects"
#: The environment variable that lists projects folders; ``--projects`` adds to it.
PROJECTS_ENV = "FRAMEWORK_PROJECTS"
REPO_ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
_loaded: dict[str, str] = {}
_folders: dict[str, Path] = {}  # plugin name -> the folder of its package


def project_dirs() -> list[Path]:
    """The ``projects/`` folders searched for plugins, first match of a name wins: the repository's
    own (it ships with a clone), then those of ``$FRAMEWORK_PROJECTS``, which ``--projects`` extends
    (:func:`add_project_dirs`). Never the current directory's unless it is named there."""
    # An installed package has no repository around it: the folder above framework/ (site-packages,
    # or a --target folder) holds nobody's projects/, so REPO_ROOT's is searched only in a clone.
    dirs = [REPO_ROOT / "projects"] if (REPO_ROOT / "pyproject.toml").is_file() else []
    dirs += [Path(p).expanduser() for p in os.environ.get(PROJECTS_ENV, "").split(os.pathsep) if p]
    out: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def add_project_dirs(folders: Sequence[Union[str, os.PathLike]]) -> None:
    """Search ``folders`` for plugins too, before those already in ``$FRAMEWORK_PROJECTS``: what
    ``--projects`` does.

    They are put at the front of this process's ``$FRAMEWORK_PROJECTS``, so that the processes it
    starts (spawned ranks, the jobs of a Hydra launcher) search them too. Plugins are discovered once
    per process, by the first ``setup()`` / ``compose()``: call this before.

    Raises:
        ConfigError: a path that is not an existing folder, naming it.
    """
    added = []
    for folder in folders:
        path = Path(folder).expanduser()
        if not path.is_dir():
            problem = "is not a folder" if path.exists() else "does not exist"
            raise ConfigError(
                f"{PROJECTS_FLAG} {os.fspath(folder)}: {path.resolve()} {problem}; expected a folder of plugin "
                f"packages (sub-folders with an __init__.py), e.g. {PROJECTS_FLAG} ./projects"
            )
        added.append(str(path.resolve()))
    if added:
        existing = [p for p in os.environ.get(PROJECTS_ENV, "").split(os.pathsep) if p]
        os.environ[PROJECTS_ENV] = os.pathsep.join(added + existing)


def split_projects_option(value: str) -> list[str]:
    """The folders of one ``--projects`` value, ``DIR[:DIR...]`` (``os.pathsep``-separated)."""
    return [p for p in value.split(os.pathsep) if p]


def split_projects_flag(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--projects DIR[:DIR...]`` / ``--projects=DIR[:DIR...]`` options, and
    the folders they name, in order: for a command line that goes on to Hydra, which refuses options
    it does not know.

    Raises:
        ConfigError: ``--projects`` without a value.
    """
    rest: list[str] = []
    folders: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == PROJECTS_FLAG:
            if i + 1 == len(argv) or not argv[i + 1] or argv[i + 1].startswith("-"):
                raise ConfigError(f"{PROJECTS_FLAG} needs a value: {PROJECTS_FLAG} DIR[{os.pathsep}DIR...]")
            folders += split_projects_option(argv[i + 1])
            i += 2
            continue
        if arg.startswith(PROJECTS_FLAG + "="):
            value = arg[len(PROJECTS_FLAG) + 1:]
            if not value:
                raise ConfigError(f"{PROJECTS_FLAG}= needs a value: {PROJECTS_FLAG} DIR[{os.pathsep}DIR...]")
            folders += split_projects_option(value)
        else:
            rest.append(arg)
        i += 1
    return rest, folders


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
