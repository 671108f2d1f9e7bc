"""Fixtures of the command-line tool tests: an untrained run directory, the built-in data, the tools as modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from omegaconf import OmegaConf

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """A ``$FRAMEWORK_CACHE`` holding the built-in synthetic dataset (generated once, a few seconds)."""
    from framework.data.synthetic import ensure_builtin_synthetic

    cache = tmp_path_factory.mktemp("cache")
    ensure_builtin_synthetic(cache)
    return cache


@pytest.fixture(autouse=True)
def _cache_env(synthetic_cache, monkeypatch) -> None:
    """Point the built-in dataset at the test cache, so that no test generates one in the user's cache."""
    monkeypatch.setenv("FRAMEWORK_CACHE", str(synthetic_cache))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """An untrained run laid out as tools/train_net.py leaves it: config.yaml, model_final.pth, last_checkpoint."""
    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_model

    cfg, run = compose(["model=mask_rcnn_R_18_FPN_quick"]), tmp_path_factory.mktemp("run")
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    Checkpointer(build_model(cfg, torch.device("cpu")), str(run)).save("model_final")
    return run


def _load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo() -> ModuleType:
    """tools/demo.py as a module, so that its ``main(argv)`` runs in-process (no interpreter start-up)."""
    return _load_tool("demo")


@pytest.fixture(scope="session")
def visualize_data() -> ModuleType:
    """tools/visualize_data.py as a module."""
    return _load_tool("visualize_data")


@pytest.fixture(scope="session")
def analyze_results() -> ModuleType:
    """tools/analyze_results.py as a module."""
    return _load_tool("analyze_results")


@pytest.fixture(scope="session")
def compare_runs() -> ModuleType:
    """tools/compare_runs.py as a module."""
    return _load_tool("compare_runs")
