"""The oneDNN primitive cache is enlarged before a run's first convolution, unless the user sized it."""

from __future__ import annotations

import os

from framework.engine.launch import launch
from framework.utils.onednn import PRIMITIVE_CACHE_CAPACITY, enlarge_primitive_cache

VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def test_sets_the_capacity_unless_the_user_did(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert enlarge_primitive_cache() is True
    assert os.environ[VARIABLE] == str(PRIMITIVE_CACHE_CAPACITY) == "8192"
    monkeypatch.setenv(VARIABLE, "300")
    assert enlarge_primitive_cache() is False
    assert os.environ[VARIABLE] == "300"


def _read_capacity() -> str | None:
    return os.environ.get(VARIABLE)


def test_launch_sets_it_before_the_run(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert launch(_read_capacity) == "8192"
