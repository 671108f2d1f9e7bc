"""Conditions on sizes that hold under every way a model is recorded.

A count of boxes is an ``int`` in eager mode, a ``SymInt`` while torch.export records (its value
unknown: a condition on it is a ``SymBool``), and a 0-dim ``Tensor`` while ``torch.jit.trace``
records (fvcore's flop counting in tools/analyze_model.py traces the model).
"""

from __future__ import annotations

from typing import Union

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

__all__ = ["known_true"]


def known_true(condition: Union[bool, torch.SymBool, torch.Tensor]) -> bool:
    """``condition`` when its value is known (a bool, or a traced tensor's value); for a symbolic
    one, True only if torch.export can prove it (``guard_or_false``: unknown counts pass)."""
    if isinstance(condition, torch.Tensor):
        return bool(condition)
    return guard_or_false(condition)
