"""Helpers of the tests that install packages and run the installed command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny_job import tiny_job

#: A 2-iteration job on small images, in-process data loading: enough to train and evaluate end to end.
SHORT_JOB = [*tiny_job(2)]


@pytest.fixture
def short_job() -> list[str]:
    return list(SHORT_JOB)


@pytest.fixture
def pip_install_into():
    """``pip_install_into(source, target, *more_sources)``: ``pip install --no-deps --target target
    source ...``, as a user would install packages (each built in an isolated environment); fails
    the test with pip's error."""

    def install(source: Path | str, target: Path, *more_sources: Path | str) -> None:
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                              str(source), *map(str, more_sources)], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]

    return install
