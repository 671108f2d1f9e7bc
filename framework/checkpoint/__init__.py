"""Checkpoints: saving/loading training state (:class:`Checkpointer`), safe reading of weight files and
converters for foreign ones (detectron2, Caffe2/MSRA, torchvision), with a report of every load."""

from framework.checkpoint.checkpointer import Checkpointer, atomic_write, load_checkpoint_file, load_weights
from framework.checkpoint.convert import convert_to_framework
from framework.checkpoint.errors import CheckpointNotFoundError, CheckpointReadError, IncompatibleCheckpointError
from framework.checkpoint.load_report import LoadReport
from framework.checkpoint.safe_pickle import UnsafePickleError

__all__ = [
    "Checkpointer",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "IncompatibleCheckpointError",
    "LoadReport",
    "UnsafePickleError",
    "atomic_write",
    "convert_to_framework",
    "load_checkpoint_file",
    "load_weights",
]
