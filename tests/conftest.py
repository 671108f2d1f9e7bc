"""Shared test setup: built-in components registered once; paths to the optional shared data."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session", autouse=True)
def _register_components():
    from framework.config.compose import setup

    setup()


@pytest.fixture
def coco_tiny() -> Path:
    """The real-COCO sample in ../shared/data/coco_tiny; skips when absent (users don't have it)."""
    root = SHARED_DATA / "coco_tiny"
    if not (root / "annotations").is_dir():
        pytest.skip(f"shared data not found at {root}")
    return root


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """``installed_plugin(entry_name, module)``: make ``module`` (written under ``tmp_path`` by the
    test) an installed distribution declaring it as a ``framework.plugins`` entry point."""

    def install(entry_name: str, module: str) -> None:
        dist = tmp_path / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[framework.plugins]\n{entry_name} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    return install
