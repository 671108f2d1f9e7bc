"""What can go wrong when reading a weights file, as user errors (:class:`framework.errors.InputError`)."""

from __future__ import annotations

from framework.errors import InputError

__all__ = ["CheckpointNotFoundError", "CheckpointReadError", "IncompatibleCheckpointError"]


class CheckpointNotFoundError(InputError, FileNotFoundError):
    """A checkpoint or weights file that does not exist."""


class CheckpointReadError(InputError, ValueError):
    """A file that is not a readable checkpoint: corrupt, truncated, or laid out unlike any supported format."""


class IncompatibleCheckpointError(InputError, RuntimeError):
    """The weights of a checkpoint do not fit the model; the message names the keys."""
