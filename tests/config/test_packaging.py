"""`pip install .` (not editable) gives a package that carries its configs and a working command."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]


def test_the_package_list_covers_every_folder():
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted(find_packages(str(REPO), include=["framework*"]) + ["framework.configs"])


@pytest.mark.slow
def test_installed_package_trains_from_any_directory(tmp_path, pip_install_into, short_job):
    target = tmp_path / "site"
    pip_install_into(REPO, target)
    shipped = {p.relative_to(target / "framework" / "configs") for p in (target / "framework" / "configs").rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml")}

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONWARNINGS": "ignore"}
    where = subprocess.run([sys.executable, "-c", "import framework.config.compose as c; print(c.CONFIG_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()) == target / "framework" / "configs", where.stderr[-2000:]

    command = target / "bin" / "framework-train"
    args = [*short_job, "hydra.run.dir=run"]
    res = subprocess.run([sys.executable, str(command), *args], cwd=work, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Final: bbox AP" in res.stdout
    assert (work / "run" / "model_final.pth").is_file() and (work / "run" / "train_net.log").is_file()
