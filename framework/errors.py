"""Exceptions raised for bad user input (configs, registry names, data files)."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
    """A config value, key or component name is invalid. The message names the config path."""


def did_you_mean(word: str, candidates: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` (or ``""``) for the closest ``candidates`` to ``word``."""
    candidates = sorted(set(map(str, candidates)))
    close = difflib.get_close_matches(str(word), candidates, n=n, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[c] for c in difflib.get_close_matches(str(word).lower(), list(lowered), n=n, cutoff=0.5)]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
