"""Shared by the export tests: the main job's exported run (one export for every test that
needs it), and the R50-FPN parity tests left out of the default run (docs/deployment.md)."""

import sys
from pathlib import Path

import pytest

# decisive_model.py and parity.py are imported by name
sys.path.insert(0, str(Path(__file__).parent))

#: Marks the R50-FPN parity tests: exporting a model costs about a minute of CPU, so the two R50
#: presets would more than double the export tests' time. Run with ``pytest -m export_r50 tests/export``.
R50_MARK = "export_r50"


def pytest_collection_modifyitems(config, items):
    """Deselect the ``export_r50`` tests unless the ``-m`` expression names the marker."""
    if R50_MARK in (config.option.markexpr or ""):
        return
    heavy = [item for item in items if item.get_closest_marker(R50_MARK)]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not item.get_closest_marker(R50_MARK)]


@pytest.fixture(scope="session")
def main_job_run(tmp_path_factory) -> Path:
    """The main job's run directory (config.yaml, a decisive random model) exported by the
    framework-export command to ``export/`` as model.onnx and model.pt2."""
    from parity import exported_run

    return exported_run(tmp_path_factory.mktemp("main_job"), [])
