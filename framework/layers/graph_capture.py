"""What model code needs to know while ``torch.export`` records it (framework/export uses it).

An exported graph runs the same operations for every input, so code that branches on tensor
*values* (``if not mask.all(): ...``) or reads them as Python numbers cannot be recorded: the
branch it takes would be frozen into the graph. The helpers here let such code take its general
branch while exporting and keep its eager shortcut otherwise, so eager results do not change.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["is_exporting", "known_all"]


def is_exporting() -> bool:
    """True while ``torch.export`` (or ``torch.onnx.export(dynamo=True)``) records the model."""
    return torch.compiler.is_exporting()


def known_all(mask: Tensor) -> bool:
    """``bool(mask.all())`` in eager mode; ``False`` while exporting, so that a caller writing
    ``if not known_all(valid): x = x[valid]`` records the filtering (a no-op when all are true)."""
    if is_exporting():
        return False
    return bool(mask.all())
