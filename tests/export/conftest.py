"""Shared by the export tests: the main job's exported run (one export for every test that
needs it), and the parity tests of the other models, left out of the default run (docs/deployment.md)."""

import sys
from pathlib import Path

import pytest

# decisive_model.py and parity.py are imported by name
sys.path.insert(0, str(Path(__file__).parent))

#: Marks the parity tests of the models other than the main job's (the R50-FPN presets, detectron2's
#: and torchvision's, and the projects/ plugins: test_parity.py's MODELS): exporting a model costs
#: about a minute of CPU, more than CI's time affords for eight more. Run with
#: ``pytest -m export_full tests/export``.
FULL_MARK = "export_full"


def pytest_collection_modifyitems(config, items):
    """Deselect the ``export_full`` tests unless the ``-m`` expression names the marker."""
    if FULL_MARK in (config.option.markexpr or ""):
        return
    heavy = [item for item in items if item.get_closest_marker(FULL_MARK)]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not item.get_closest_marker(FULL_MARK)]


@pytest.fixture(scope="session")
def main_job_run(tmp_path_factory) -> Path:
    """The main job's run directory (config.yaml, a decisive random model) exported by the
    framework-export command to ``export/`` as model.onnx and model.pt2."""
    from parity import exported_run

    return exported_run(tmp_path_factory.mktemp("main_job"), [])
