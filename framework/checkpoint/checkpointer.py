"""Checkpointer: fvcore's Checkpointer with crash-safe saving, pruning, safe loading and load reports.

* Saving writes to a temporary file in the same folder and renames it over the target
  (``os.replace`` is atomic on POSIX), so a crash mid-save never leaves a truncated checkpoint or
  ``last_checkpoint`` pointer behind.
* :meth:`Checkpointer.prune` keeps the newest N periodic checkpoints on disk.
* Loading (:func:`load_checkpoint_file`) never runs code from a file: ``.pth`` through
  ``torch.load(weights_only=True)``, ``.pkl`` through a restricted unpickler. The model's weights
  may be ours, detectron2's, Caffe2/MSRA ImageNet backbones or torchvision's
  (:func:`framework.checkpoint.convert.convert_to_framework`).
* Every load produces a :class:`LoadReport` (missing / unexpected / shape-mismatched keys), logged
  as a table. A checkpoint of another architecture fails; shape mismatches alone (fine-tuning on
  other classes) are skipped with ``skip_mismatch=True``.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
import re
import tempfile
from typing import IO, Any, Callable, Optional

import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys
from torch import nn

from framework.checkpoint.convert import convert_to_framework
from framework.checkpoint.detectron2 import read_pkl
from framework.checkpoint.safe_pickle import UnsafePickleError
from framework.checkpoint.errors import CheckpointNotFoundError, CheckpointReadError, IncompatibleCheckpointError
from framework.checkpoint.load_report import LoadReport
from framework.utils import comm

__all__ = [
    "Checkpointer",
    "LoadReport",
    "atomic_write",
    "load_checkpoint_file",
    "load_weights",
]

logger = logging.getLogger(__name__)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` all at once: ``write(f)`` fills a temporary file next to it, which is
    then renamed to ``path``. On any error the temporary file is removed and ``path`` is untouched;
    a temporary file left by a killed earlier write of ``path`` is removed by the next one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        os.remove(stale)  # left by an earlier write of this file that was killed (SIGKILL, power loss)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class Checkpointer(_FvcoreCheckpointer):
    """Save and load a model plus any objects with ``state_dict()`` / ``load_state_dict()``.

    Args:
        model: the model (a DDP/DP wrapper is unwrapped).
        save_dir: folder of the checkpoints and of the ``last_checkpoint`` pointer file.
        save_to_disk: whether :meth:`save` writes; default: only on the main process.
        skip_mismatch: when loading, skip the model weights whose shape differs in the checkpoint
            (they keep their initialisation), e.g. the class-specific predictors when fine-tuning
            on another number of classes; without it such a load fails.
        checkpointables: e.g. ``optimizer=..., scheduler=...``; the trainer adds ``optimizer``,
            ``scheduler`` and itself (``trainer``) when missing.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        skip_mismatch: bool = False,
        **checkpointables: Any,
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger
        self.skip_mismatch = skip_mismatch
        #: what the last :meth:`load` did with each model key.
        self.last_report: LoadReport | None = None
        self._loading = ""  # the file being loaded, for the report
        self._strict = False
        self._source = ""  # the weights' format, from the converter
        self._checkpoint_keys: list[str] = []

    # ------------------------------------------------------------------ saving
    def save(self, name: str, *, tag_last: bool = True, **extra: Any) -> Optional[str]:  # type: ignore[override]
        """Write ``{save_dir}/{name}.pth`` holding ``model``, every checkpointable and ``extra``.

        Args:
            tag_last: point ``last_checkpoint`` (what resuming loads) at this file.
        Returns:
            the path written, or ``None`` when this checkpointer does not save (no ``save_dir``,
            not the main process).
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(extra)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        if os.path.basename(path) != basename:
            raise ValueError(f"checkpoint name {name!r} must be a plain file name, without folders")
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        if tag_last:
            self.tag_last_checkpoint(basename)
        return path

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically point ``{save_dir}/last_checkpoint`` at ``last_filename_basename``."""
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def periodic_checkpoints(self, prefix: str = "model") -> list[tuple[int, str]]:
        """``[(iteration, path)]`` of the ``{prefix}_{iter:07d}.pth`` files in ``save_dir``, oldest first."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        pattern = re.compile(rf"^{re.escape(prefix)}_(\d{{7,}})\.pth$")
        found = []
        for fname in os.listdir(self.save_dir):
            m = pattern.match(fname)
            if m:
                found.append((int(m.group(1)), os.path.join(self.save_dir, fname)))
        return sorted(found)

    def prune(self, prefix: str = "model", *, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` periodic checkpoints ``{prefix}_{iter:07d}.pth``.

        Other files (``{prefix}_final.pth``, ``model_best.pth``) are never touched, nor is the file
        ``last_checkpoint`` points to. Returns the removed paths.
        """
        if keep < 1:
            raise ValueError(f"prune(keep={keep}): keep must be >= 1")
        if not self.save_to_disk:
            return []
        last = os.path.abspath(self.get_checkpoint_file()) if self.has_checkpoint() else None
        removed = []
        for _, path in self.periodic_checkpoints(prefix)[:-keep]:
            if os.path.abspath(path) == last:
                continue
            os.remove(path)
            removed.append(path)
        return removed

    # ------------------------------------------------------------------ loading
    def load(  # type: ignore[override]
        self, path: str, checkpointables: Optional[list[str]] = None, *, strict: bool = False
    ) -> dict[str, Any]:
        """Load the model (and the ``checkpointables`` named, default all) from ``path``.

        The model's weights are converted from the format they are in (ours = detectron2's,
        Caffe2/MSRA, torchvision); the other entries (optimizer, scheduler and trainer state of our
        checkpoints) are loaded as they are. What was loaded is in :attr:`last_report`.

        Args:
            strict: fail on any missing, unexpected or wrong-shape key. Without it only a checkpoint
                of another architecture fails (see :class:`LoadReport`), and shape mismatches unless
                the checkpointer has ``skip_mismatch``.
        Returns:
            what the file holds beyond the model and the loaded checkpointables (e.g. ``iteration``).
        Raises:
            CheckpointNotFoundError: no such file (a FileNotFoundError).
            UnsafePickleError: the file would run code when unpickled.
            IncompatibleCheckpointError: the weights do not fit the model; the matching ones have
                been loaded already (the error is meant to stop the run).
        """
        if not path:
            self.logger.info("No checkpoint given; the model keeps its initialisation")
            return {}
        if not os.path.isfile(path):
            local = self.path_manager.get_local_path(path)  # URLs are downloaded and cached
            if not os.path.isfile(local):
                hint = ""
                if os.path.basename(self.get_checkpoint_file() or "") == os.path.basename(path):
                    hint = f" ({os.path.join(self.save_dir, 'last_checkpoint')} points to it)"
                raise CheckpointNotFoundError(f"checkpoint {path!r} not found{hint}")
            path = local
        self._strict = strict
        self._loading = path
        try:
            return super().load(path, checkpointables=checkpointables)
        finally:
            self._strict = False

    def _load_file(self, f: str) -> dict[str, Any]:
        return load_checkpoint_file(f)

    def _load_model(self, checkpoint: dict[str, Any]) -> _IncompatibleKeys:
        checkpoint["model"], self._source = convert_to_framework(checkpoint["model"], self.model.state_dict())
        self._checkpoint_keys = list(checkpoint["model"])
        return super()._load_model(checkpoint)

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        report = LoadReport.build(
            path=self._loading,
            source=self._source,
            model=type(self.model).__name__,
            model_keys=list(self.model.state_dict()),
            checkpoint_keys=self._checkpoint_keys,
            incompatible=incompatible,
        )
        self.last_report = report
        clean = not (report.missing or report.unexpected or report.wrong_shape)
        self.logger.log(logging.INFO if clean else logging.WARNING, report.table())
        failure = report.failure(strict=self._strict, skip_mismatch=self.skip_mismatch)
        if failure:
            raise IncompatibleCheckpointError(failure)


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """Read a checkpoint or weights file without running code from it.

    ``.pkl``: detectron2 model zoo, Detectron, MSRA ImageNet (restricted unpickler, see
    :func:`framework.checkpoint.detectron2.read_pkl`); anything else: ``torch.load(weights_only=True)``.

    Returns:
        ``{"model": {name: Tensor}, **rest}``; a bare state dict (torchvision weights) becomes ``"model"``.
        The names are the file's: :func:`framework.checkpoint.convert.convert_to_framework` maps them.
    Raises:
        UnsafePickleError: the file names a global outside plain data (the message names it).
    """
    if path.endswith(".pkl"):
        return read_pkl(path)
    try:
        # weights_only: our checkpoints hold only tensors and plain containers (RNG states
        # included), so loading cannot execute code from the file.
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        named = re.search(r"GLOBAL (\S+)", str(e))
        if named is None:  # not a global: the bytes are no pickle at all
            raise CheckpointReadError(f"{path}: not a readable checkpoint (corrupt, or not written by torch.save)") from None
        raise UnsafePickleError(
            f"{path}: refusing to load the global {named.group(1)}, which the file names: unpickling it could run code. A .pth file may "
            "hold only tensors, plain containers, numbers and strings (torch.load(weights_only=True)). If you "
            "trust the file, load it with torch.load(weights_only=False) yourself and re-save only its state dicts."
        ) from None
    except (RuntimeError, EOFError) as e:  # torch's zip reader on a truncated or empty file
        raise CheckpointReadError(f"{path}: not a readable checkpoint (truncated or empty?): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{path}: expected a dict (a checkpoint or a state dict), got {type(data).__name__}")
    if "model" not in data:  # a bare state dict, e.g. torchvision weights
        data = {"model": data}
    return data


def load_weights(model: nn.Module, path: str, *, skip_mismatch: bool = False, strict: bool = False) -> LoadReport:
    """Load the weights of any supported file into ``model`` (see :meth:`Checkpointer.load`).

    Returns:
        the :class:`LoadReport` (also logged as a table).
    """
    checkpointer = Checkpointer(model, save_to_disk=False, skip_mismatch=skip_mismatch)
    checkpointer.load(path, checkpointables=[], strict=strict)
    assert checkpointer.last_report is not None
    return checkpointer.last_report
