"""Plugin discovery: project folders and pip-installed packages (entry points)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from framework.config import plugins
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
