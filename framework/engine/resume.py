"""Where a training run starts: resumed from its last checkpoint, or from initial weights.

Decided before the trainer and the data loaders are built, so that both are built for the
iteration they start at (the loader yields that iteration's batch first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from framework.checkpoint.errors import CheckpointReadError

__all__ = ["Start", "resume_or_load"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """The first iteration of a run and the trainer state to restore (``None`` for a fresh run)."""

    iteration: int
    trainer_state: Optional[dict[str, Any]] = None


def resume_or_load(checkpointer: Any, weights: Optional[str], *, resume: bool) -> Start:
    """Resume from ``last_checkpoint`` in the checkpointer's folder, or load initial weights.

    With ``resume`` and a ``last_checkpoint`` present: load the model and every checkpointable the
    checkpointer holds (optimizer, scheduler), and return the saved trainer state (for
    ``Trainer.load_state_dict``) with the iteration after the saved one. Otherwise: load only the
    model weights from ``weights`` (if given) and start at 0.
    """
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
        rest = checkpointer.load(path)
        state = rest.get("trainer")
        saved = state["iteration"] if state is not None else rest.get("iteration")
        if saved is None:
            raise CheckpointReadError(f"checkpoint {path} has no iteration (neither a trainer state nor 'iteration'): "
                             "it is a weights file, not a training checkpoint; give it as weights= instead")
        logger.info(f"Resuming from {path} at iteration {int(saved) + 1}")
        return Start(int(saved) + 1, state)
    if weights:
        checkpointer.load(weights, checkpointables=[])
    return Start(0, None)
