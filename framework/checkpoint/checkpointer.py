"""Checkpointer: fvcore's Checkpointer with crash-safe saving, pruning and clear load reports.

* Saving writes to a temporary file in the same folder and renames it over the target
  (``os.replace`` is atomic on POSIX), so a crash mid-save never leaves a truncated checkpoint or
  ``last_checkpoint`` pointer behind.
* :meth:`Checkpointer.prune` keeps the newest N periodic checkpoints on disk.
* Loading accepts our ``.pth`` files, plain state dicts (torchvision weights) and detectron2
  model-zoo ``.pkl`` files; missing, unexpected and shape-mismatched keys are reported in one
  warning (or raise with ``strict=True``).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from collections import defaultdict
from typing import IO, Any, Callable, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys
from torch import nn

from framework.utils import comm

__all__ = ["Checkpointer", "atomic_write"]

logger = logging.getLogger(__name__)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` all at once: ``write(f)`` fills a temporary file next to it, which is
    then renamed to ``path``. On any error the temporary file is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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
        checkpointables: e.g. ``optimizer=..., scheduler=...``; the trainer adds ``optimizer``,
            ``scheduler`` and itself (``trainer``) when missing.
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None, **checkpointables: Any
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logger
        #: missing / unexpected / wrong-shape keys of the last :meth:`load`.
        self.last_incompatible_keys: _IncompatibleKeys | None = None
        self._loading = ""  # the file being loaded, for the report
        self._strict = False

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

        Args:
            strict: raise instead of warning when model keys are missing, unexpected or of another shape.
        Returns:
            what the file holds beyond the model and the loaded checkpointables (e.g. ``iteration``).
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
                raise FileNotFoundError(f"checkpoint {path!r} not found{hint}")
            path = local
        self._strict = strict
        self._loading = path
        try:
            return super().load(path, checkpointables=checkpointables)
        finally:
            self._strict = False

    def _load_file(self, f: str) -> dict[str, Any]:
        if f.endswith(".pkl"):
            return _load_pkl(f)
        try:
            # weights_only: our checkpoints hold only tensors and plain containers (RNG states
            # included), so loading cannot execute code from the file.
            data = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise RuntimeError(
                f"{f} holds Python objects beyond tensors and plain containers, which are not loaded "
                f"for safety ({str(e).splitlines()[0]}). Re-save it with only state dicts."
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected a dict (a checkpoint or a state dict), got {type(data).__name__}")
        if "model" not in data:  # a bare state dict, e.g. torchvision weights
            data = {"model": data}
        return data

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        self.last_incompatible_keys = incompatible
        lines = []
        missing = list(incompatible.missing_keys)
        unexpected = list(incompatible.unexpected_keys)
        if missing:
            lines.append(f"{len(missing)} model keys not in the checkpoint (keep their initialisation):")
            lines += [f"  {k}" for k in _group_keys(missing)]
        if unexpected:
            lines.append(f"{len(unexpected)} checkpoint keys not in the model (ignored):")
            lines += [f"  {k}" for k in _group_keys(unexpected)]
        if incompatible.incorrect_shapes:
            lines.append(f"{len(incompatible.incorrect_shapes)} keys with another shape (not loaded):")
            lines += [
                f"  {k}: {tuple(c)} in the checkpoint, {tuple(m)} in the model"
                for k, c, m in incompatible.incorrect_shapes
            ]
        if not lines:
            return
        message = f"Loading {self._loading or 'a checkpoint'} into {type(self.model).__name__}:\n" + "\n".join(lines)
        if self._strict:
            raise RuntimeError(message)
        self.logger.warning(message)


def _group_keys(keys: list[str]) -> list[str]:
    """``["a.b.weight", "a.b.bias", "c"]`` -> ``["a.b.{bias, weight}", "c"]`` (shorter reports)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        prefix, _, leaf = k.rpartition(".")
        groups[prefix].append(leaf)
    out = []
    for prefix, leaves in sorted(groups.items()):
        leaves = sorted(leaves)
        body = leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}"
        out.append(f"{prefix}.{body}" if prefix else body)
    return out


def _load_pkl(f: str) -> dict[str, Any]:
    """A detectron2 model-zoo / Detectron ``.pkl``: ``{"model": {name: ndarray}, "__author__": ...}``."""
    with open(f, "rb") as fh:
        data = pickle.load(fh, encoding="latin1")
    if isinstance(data, dict) and "model" in data:
        model = data["model"]
    elif isinstance(data, dict) and "blobs" in data:
        model = data["blobs"]  # Detectron (caffe2) files: names need a converter to match ours
    else:
        model = data
    if not isinstance(model, dict):
        raise ValueError(f"{f}: expected a dict of weights, got {type(model).__name__}")
    # Detectron files also hold SGD momenta ("*_momentum"), which are not weights.
    model = {
        k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        for k, v in model.items()
        if not k.endswith("_momentum")
    }
    out = {"model": model}
    if isinstance(data, dict):
        out.update({k: data[k] for k in ("__author__", "matching_heuristics") if k in data})
    return out
