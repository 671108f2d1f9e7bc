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
