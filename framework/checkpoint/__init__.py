"""Checkpoints: saving/loading training state (:class:`Checkpointer`) and converters for foreign files."""

from framework.checkpoint.checkpointer import Checkpointer, atomic_write

__all__ = ["Checkpointer", "atomic_write"]
