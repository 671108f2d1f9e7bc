"""Exceptions raised for bad user input (configs, registry names, data files)."""

from __future__ import annotations

import difflib
from typing import Iterable


class InputError(Exception):
    """Bad input from the user (a config, a data or weights file), not a bug: the message names the
    file, key or value and what would be valid. Command-line tools print it alone and exit with 2."""


class ConfigError(InputError, ValueError):
    """A config value, key or component name is invalid. The message names the config path."""


class EvaluationInputError(InputError, ValueError):
    """A ground truth and detections that cannot be evaluated together: results on image ids or
    categories the ground truth does not have, an empty results file, a mask evaluation of a ground
    truth without masks. The message names the file and what is wrong."""


class ExportError(InputError):
    """A model (or a part of it) that cannot be exported to ONNX or torch.export: the message names
    the module (its path in the model and its class) and the operation that could not be recorded
    or translated, and docs/deployment.md says how to make it exportable."""


class MissingDependencyError(InputError, ImportError):
    """An optional package a feature needs is not installed: the message names it and the extra that
    installs it (``pip install 'framework[export]'``). An ImportError too, for callers that catch those."""


def did_you_mean(word: str, candidates: Iterable[str], *, n: int = 3) -> str:
    """Return ``" Did you mean 'x'?"`` (or ``""``) for the closest ``candidates`` to ``word``."""
    candidates = sorted(set(map(str, candidates)))
    lowered = {c.lower(): c for c in candidates}
    scored = sorted(
        ((difflib.SequenceMatcher(None, str(word).lower(), low).ratio(), orig) for low, orig in lowered.items()),
        reverse=True,
    )
    # Keep the clear winners only: close enough, and not far behind the best match.
    best = scored[0][0] if scored else 0.0
    close = [c for r, c in scored[:n] if r >= 0.5 and r >= best - 0.1]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
