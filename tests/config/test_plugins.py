"""Plugin discovery: project folders and pip-installed packages (entry points)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap

import pytest

from framework.config import plugins
from framework.errors import ConfigError
from framework.registry import MASK_HEADS


def test_repository_projects_are_imported():
    assert "lite_mask_head" in plugins.discover_plugins()
    assert "LiteMaskHead" in MASK_HEADS.names()


def test_entry_point_package_is_imported(tmp_path, installed_plugin):
    # A minimal installed distribution: a module plus dist-info declaring the entry point.
    (tmp_path / "my_plugin_pkg.py").write_text(textwrap.dedent("""
        from framework.registry import BOX_HEADS
        from framework.modeling.roi_heads.box_head import FastRCNNConvFCHead

        @BOX_HEADS.register("EntryPointBoxHead")
        class EntryPointBoxHead(FastRCNNConvFCHead):
            '''A box head that arrived through an entry point.'''
    """))
    installed_plugin("my_plugin", "my_plugin_pkg")
    try:
        found = plugins.discover_plugins()
        assert found["my_plugin"] == "entry point my_plugin_pkg"
        from framework.registry import BOX_HEADS

        assert "EntryPointBoxHead" in BOX_HEADS.names()
    finally:
        from framework.registry import BOX_HEADS

        BOX_HEADS._obj_map.pop("EntryPointBoxHead", None)
        plugins._loaded.pop("my_plugin", None)
        sys.modules.pop("my_plugin_pkg", None)


def test_broken_project_names_the_folder(tmp_path, monkeypatch):
    broken = tmp_path / "projects" / "broken_plugin"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setenv("FRAMEWORK_PROJECTS", str(tmp_path / "projects"))
    with pytest.raises(ImportError, match=r"broken_plugin.*boom"):
        plugins.discover_plugins()
    assert "broken_plugin" not in plugins._loaded


# ---------------------------------------------------------------------------- which projects folders
PROBE = "MARKER = 'imported'\n"


def _project(root, name: str, body: str = PROBE):
    """``root/projects/name/__init__.py`` holding ``body``; returns ``root/projects``."""
    (root / "projects" / name).mkdir(parents=True)
    (root / "projects" / name / "__init__.py").write_text(body)
    return root / "projects"


@pytest.fixture
def forget_project(monkeypatch):
    """``forget_project(name)``: undo a test plugin's import at teardown; FRAMEWORK_PROJECTS is
    restored too (setenv records it, so what add_project_dirs writes is undone)."""
    monkeypatch.setenv("FRAMEWORK_PROJECTS", "")
    names = []
    yield names.append
    for name in names:
        plugins._loaded.pop(name, None)
        folder = plugins._folders.pop(name, None)
        sys.modules.pop(f"projects.{name}", None)
        parent_path = getattr(sys.modules.get("projects"), "__path__", [])
        if folder is not None and str(folder.parent) in parent_path:
            parent_path.remove(str(folder.parent))


def test_the_current_directorys_projects_are_not_imported_by_default(tmp_path, monkeypatch, forget_project):
    forget_project("cwd_only_plugin")
    projects = _project(tmp_path, "cwd_only_plugin", "raise RuntimeError('imported from the current directory')\n")
    monkeypatch.chdir(tmp_path)
    assert projects.resolve() not in plugins.project_dirs()
    assert plugins.project_dirs()[0] == plugins.REPO_ROOT / "projects"  # the clone's own stay
    assert "cwd_only_plugin" not in plugins.discover_plugins()
    assert "projects.cwd_only_plugin" not in sys.modules


@pytest.mark.parametrize("how", ["flag", "flag=", "env"])
def test_a_projects_folder_is_imported_when_named(how, tmp_path, monkeypatch, forget_project):
    name = f"named_plugin_{how.replace('=', '_eq')}"
    forget_project(name)
    projects = _project(tmp_path / "elsewhere", name)
    monkeypatch.chdir(tmp_path)  # not the folder above projects/: only the naming finds it
    other = tmp_path / "empty_projects"
    other.mkdir()
    if how == "env":
        monkeypatch.setenv("FRAMEWORK_PROJECTS", f"{other}{os.pathsep}{projects}")
    else:
        value = f"{other}{os.pathsep}{projects}"
        argv = ["--projects", value] if how == "flag" else [f"--projects={value}"]
        rest, folders = plugins.split_projects_flag(["--cfg", "job", *argv, "seed=3"])
        assert rest == ["--cfg", "job", "seed=3"] and folders == [str(other), str(projects)]
        plugins.add_project_dirs(folders)
        # in the environment, so that spawned ranks and launcher jobs search the folders too
        assert os.environ["FRAMEWORK_PROJECTS"] == f"{other.resolve()}{os.pathsep}{projects.resolve()}"
    assert plugins.project_dirs() == [plugins.REPO_ROOT / "projects", other.resolve(), projects.resolve()]
    assert plugins.discover_plugins()[name] == str(projects.resolve() / name)
    assert sys.modules[f"projects.{name}"].MARKER == "imported"


def test_an_installed_package_searches_no_projects_folder_of_its_own(tmp_path, monkeypatch):
    # pip puts framework/ into site-packages: REPO_ROOT is then site-packages, not a clone
    (tmp_path / "projects").mkdir()
    monkeypatch.setattr(plugins, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("FRAMEWORK_PROJECTS", "")
    assert plugins.project_dirs() == []
    (tmp_path / "pyproject.toml").write_text("")
    assert plugins.project_dirs() == [tmp_path / "projects"]


def test_projects_flag_values_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_PROJECTS", f"{tmp_path}")
    rest, folders = plugins.split_projects_flag(["--projects", f"a{os.pathsep}b", "x=1", "--projects=c", "-m"])
    assert (rest, folders) == (["x=1", "-m"], ["a", "b", "c"])
    for argv in (["--projects"], ["--projects", "--cfg", "job"], ["--projects="]):
        with pytest.raises(ConfigError, match=r"--projects=? needs a value: --projects DIR\[.DIR\.\.\.\]"):
            plugins.split_projects_flag(argv)
    with pytest.raises(ConfigError, match=rf"--projects {tmp_path / 'nope'}: .*nope does not exist; expected a folder "
                                          r"of plugin packages \(sub-folders with an __init__.py\)"):
        plugins.add_project_dirs([tmp_path / "nope"])
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match=r"a_file is not a folder"):
        plugins.add_project_dirs([tmp_path, tmp_path / "a_file"])
    assert os.environ["FRAMEWORK_PROJECTS"] == str(tmp_path)  # nothing added when one path is bad


def test_train_command_takes_projects_out_of_the_command_line_before_hydra(tmp_path, monkeypatch, capsys):
    from framework.engine import cli

    monkeypatch.setenv("FRAMEWORK_PROJECTS", "")
    seen = {}
    monkeypatch.setattr(cli, "setup", lambda: seen.setdefault("plugins", os.environ["FRAMEWORK_PROJECTS"]))
    monkeypatch.setattr(cli, "preflight", lambda argv: seen.setdefault("preflight", list(argv)))
    monkeypatch.setattr(cli.hydra, "main", lambda **kw: lambda task: lambda: seen.setdefault("hydra", sys.argv[1:]))
    monkeypatch.setattr(sys, "argv", ["framework-train", "--cfg", "job", "--projects", str(tmp_path), "seed=3"])
    cli.main()
    assert seen == {"plugins": str(tmp_path.resolve()), "preflight": ["--cfg", "job", "seed=3"],
                    "hydra": ["--cfg", "job", "seed=3"]}

    monkeypatch.setattr(sys, "argv", ["framework-train", "--projects", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert f"Config error: --projects {tmp_path / 'nope'}: " in capsys.readouterr().err


def test_tools_with_a_parser_take_projects_too(tmp_path, monkeypatch, capsys):
    from framework.config import listing
    from framework.utils.cli import add_projects_flag, run_tool

    monkeypatch.setenv("FRAMEWORK_PROJECTS", "")
    parser = argparse.ArgumentParser()
    add_projects_flag(parser)
    args = parser.parse_args(["--projects", f"{tmp_path}{os.pathsep}{tmp_path}", "--projects", str(tmp_path)])
    assert run_tool(lambda a: len(os.environ["FRAMEWORK_PROJECTS"].split(os.pathsep)), args) == 3
    assert run_tool(lambda a: 0, parser.parse_args(["--projects", str(tmp_path / "nope")])) == 2
    assert f"error: --projects {tmp_path / 'nope'}: " in capsys.readouterr().err
    assert listing.main(["--projects", str(tmp_path / "nope")]) == 2
    assert f"error: --projects {tmp_path / 'nope'}: " in capsys.readouterr().err


CLI_PLUGIN = '''
from framework.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead
from framework.registry import MASK_HEADS


@MASK_HEADS.register()
class FlagMaskHead(MaskRCNNConvUpsampleHead):
    """A mask head from a projects folder named by --projects."""
'''


def test_train_command_with_projects_from_another_directory(tmp_path):
    """End to end, in a fresh process: a plugin in another folder's projects/ becomes a config-group
    option with ``--projects``; the current directory's projects/ (which would fail) is left alone."""
    projects = _project(tmp_path / "other_repo", "flag_plugin", CLI_PLUGIN)
    _project(tmp_path, "cwd_plugin", "raise RuntimeError('the current directory was searched')\n")
    env = {k: v for k, v in os.environ.items() if k != "FRAMEWORK_PROJECTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(plugins.REPO_ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore"
    command = [sys.executable, str(plugins.REPO_ROOT / "tools" / "train_net.py"), "--cfg", "job",
               "model/roi_heads/mask_head=FlagMaskHead"]
    res = subprocess.run([*command, "--projects", str(projects)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "name: FlagMaskHead" in res.stdout
    res = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "FlagMaskHead" in res.stderr  # unknown without the flag
