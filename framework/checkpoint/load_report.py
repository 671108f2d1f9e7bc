"""LoadReport: what one load did with the keys of a model and of a checkpoint, and when it must fail."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

from fvcore.common.checkpoint import _IncompatibleKeys

__all__ = ["LoadReport"]

# Keys whose absence (or presence) says nothing about the architecture: batch-norm statistics keep
# their identity initialisation (Caffe2 affine-channel files have none), and only nn.BatchNorm2d,
# not FrozenBatchNorm2d, counts its batches.
_BENIGN_MISSING = re.compile(r"(^|\.)(running_mean|running_var|num_batches_tracked)$")
_BENIGN_UNEXPECTED = re.compile(r"(^|\.)num_batches_tracked$")
_FIRST_FEW = 5


def _part(key: str) -> str:
    """The first two levels of a key's module path: ``backbone.bottom_up``, ``roi_heads.mask_head``."""
    return ".".join(key.split(".")[:-1][:2])


@dataclass(frozen=True)
class LoadReport:
    """What one load did with the keys of the model and of the checkpoint.

    Attributes:
        path: the file loaded.
        source: the format its weights were recognised as, e.g. ``"Caffe2/MSRA ImageNet backbone"``.
        model: the model's class name.
        loaded: checkpoint tensors loaded into the model.
        total: keys of the model's state dict.
        missing: model keys not in the checkpoint; they keep their initialisation.
        unexpected: checkpoint keys not in the model; ignored.
        wrong_shape: ``(key, shape in the checkpoint, shape in the model)``; not loaded.
        conflicts: the missing and unexpected keys that mark another architecture: keys of a part
            (the first two levels of the module path, e.g. ``backbone.bottom_up``,
            ``roi_heads.mask_head``) that both the model and the checkpoint have. A part on one side
            only is no conflict: the FPN and heads of a model started from an ImageNet backbone, the
            mask head of a Mask R-CNN started from a Faster R-CNN. Batch-norm statistics are never
            conflicts.
    """

    path: str
    source: str
    model: str
    loaded: int
    total: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    conflicts: tuple[str, ...]

    @classmethod
    def build(
        cls,
        *,
        path: str,
        source: str,
        model: str,
        model_keys: Iterable[str],
        checkpoint_keys: Iterable[str],
        incompatible: _IncompatibleKeys,
    ) -> "LoadReport":
        """The report of a load from fvcore's ``_IncompatibleKeys`` (whose missing keys include the
        keys of another shape: listed here under ``wrong_shape`` only)."""
        model_keys, checkpoint_keys = list(model_keys), list(checkpoint_keys)
        wrong = tuple((k, tuple(c), tuple(m)) for k, c, m in incompatible.incorrect_shapes)
        wrong_keys = {k for k, _, _ in wrong}
        missing = tuple(k for k in incompatible.missing_keys if k not in wrong_keys)
        unexpected = tuple(incompatible.unexpected_keys)
        model_parts = {_part(k) for k in model_keys}
        checkpoint_parts = {_part(k) for k in checkpoint_keys}
        conflicts = tuple(
            [k for k in missing if _part(k) in checkpoint_parts and not _BENIGN_MISSING.search(k)]
            + [k for k in unexpected if _part(k) in model_parts and not _BENIGN_UNEXPECTED.search(k)]
        )
        return cls(
            path=path,
            source=source,
            model=model,
            loaded=len(checkpoint_keys) - len(unexpected) - len(wrong),
            total=len(model_keys),
            missing=missing,
            unexpected=unexpected,
            wrong_shape=wrong,
            conflicts=conflicts,
        )

    def table(self) -> str:
        """The report as log lines, keys grouped by module (``a.b.{bias, weight}``)."""
        lines = [
            f"{self.path or 'checkpoint'} ({self.source}) -> {self.model}: {self.loaded} tensors loaded, "
            f"{self.total} model keys"
        ]
        if self.missing:
            lines.append(f"{len(self.missing)} model keys not in the checkpoint (keep their initialisation):")
            lines += [f"  {k}" for k in _group_keys(list(self.missing))]
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} checkpoint keys not in the model (ignored):")
            lines += [f"  {k}" for k in _group_keys(list(self.unexpected))]
        if self.wrong_shape:
            lines.append(f"{len(self.wrong_shape)} keys with another shape (not loaded, keep their initialisation):")
            lines += [f"  {k}: {c} in the checkpoint, {m} in the model" for k, c, m in self.wrong_shape]
        return "\n".join(lines)

    def failure(self, *, strict: bool = False, skip_mismatch: bool = False) -> Optional[str]:
        """Why this load must fail, or None.

        It fails when nothing was loaded, on :attr:`conflicts` (another architecture), and on
        :attr:`wrong_shape` unless ``skip_mismatch``; with ``strict`` on any missing, unexpected or
        wrong-shape key.
        """
        head = f"{self.path or 'the checkpoint'} ({self.source}) does not fit {self.model}"
        if self.loaded == 0 and self.total > 0 and not self.wrong_shape:
            lines = [f"{head}: none of its {len(self.unexpected)} tensors matches a model key. Checkpoint keys:"]
            lines += _first(self.unexpected) + ["  model keys:"] + _first(self.missing)
            lines.append(
                "Supported: this framework's and detectron2's names, Caffe2/MSRA ImageNet ResNets, torchvision "
                "ResNet classifiers and R-CNN detectors."
            )
            return "\n".join(lines)
        missing = self.missing if strict else [k for k in self.missing if k in self.conflicts]
        unexpected = self.unexpected if strict else [k for k in self.unexpected if k in self.conflicts]
        wrong = self.wrong_shape if strict or not skip_mismatch else ()
        if not (missing or unexpected or wrong):
            return None
        lines = [f"{head}:"]
        if wrong:
            lines.append(f"  {len(wrong)} keys with another shape:")
            lines += _first([f"{k}: {c} in the checkpoint, {m} in the model" for k, c, m in wrong])
        if missing:
            lines.append(f"  {len(missing)} model keys not in the checkpoint:")
            lines += _first(missing)
        if unexpected:
            lines.append(f"  {len(unexpected)} checkpoint keys not in the model:")
            lines += _first(unexpected)
        if strict:
            lines.append("strict loading needs every key to match.")
        elif missing or unexpected:
            lines.append(
                "The checkpoint is of another architecture (another depth, norm or head?): check model= "
                "against weights=. Parts only one side has are fine; these keys belong to parts both have."
            )
        else:
            lines.append(
                "To fine-tune on another set of classes, set weights_skip_mismatch=true "
                "(Checkpointer(skip_mismatch=True)): the layers of another shape then keep their initialisation."
            )
        return "\n".join(lines)


def _first(items: Iterable[str]) -> list[str]:
    """The first few ``items`` as indented lines, then how many more there are."""
    items = list(items)
    more = [f"    ... and {len(items) - _FIRST_FEW} more"] if len(items) > _FIRST_FEW else []
    return [f"    {item}" for item in items[:_FIRST_FEW]] + more


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
