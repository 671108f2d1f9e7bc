"""Where a torchvision classifier's stages end, found by running it once on a dummy image.

Hard-coding "layer1..layer4 for ResNet, features.3/6/12/16 for MobileNetV3-Large, ..." breaks on
every new family and width variant. Instead one forward pass (on the meta device: shapes only)
records, for every module, the stride and channels of its output and when its (last) call
finished. The *trunk* is the deepest module whose descendants span every stride of the network;
its children are the stages, and the last child at each stride is that stride's feature map (what
detectron2 calls ``res{level}``, with stride ``2**level``). The same record says which modules run
before a given level, for freezing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from framework.errors import ConfigError

__all__ = ["DRY_RUN_SIZE", "ModuleRecord", "dry_run", "record_modules", "map_stride", "stage_ends", "modules_run_before"]

#: (H, W) of the dummy image: divisible by 32, and H != W, so that a channels-last output
#: (B, H, W, C) or a global pool, whose H and W ratios to the input differ, is not taken for a map.
DRY_RUN_SIZE = (96, 128)


@dataclass(frozen=True)
class ModuleRecord:
    """What the dry run saw of one module.

    Attributes:
        stride: input pixels per output pixel, or None if the output is not a (B, C, H/s, W/s) map.
        channels: C of that map (None with ``stride``).
        done: rank of the end of the module's last call (a container ends after its children).
    """

    stride: Optional[int]
    channels: Optional[int]
    done: int


def map_stride(shape: Sequence[int], size: Sequence[int] = DRY_RUN_SIZE) -> Optional[int]:
    """The stride of a (B, C, h, w) output of an (H, W) = ``size`` input; None if not a feature map.

    >>> map_stride((1, 64, 24, 32), (96, 128))
    4
    >>> map_stride((1, 64, 1, 1), (96, 128)) is None   # a global pool: 96 / 1 != 128 / 1
    True
    """
    if len(shape) != 4:
        return None
    (h, w), (H, W) = shape[-2:], size
    if h == 0 or w == 0 or H % h or W % w or H // h != W // w:
        return None
    return H // h


@torch.no_grad()
def dry_run(model: nn.Module, size: Sequence[int] = DRY_RUN_SIZE) -> Any:
    """``model``'s output for a (1, 3, H, W) image, computed on the meta device: shapes, no arithmetic.

    The parameters and buffers are swapped for meta tensors only for this call
    (``torch.func.functional_call``), so nothing is copied and nothing of ``model`` changes; eval
    mode (restored afterwards) keeps stochastic layers out of the way.
    """
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    model.eval()
    try:
        return functional_call(model, meta, (torch.zeros(1, 3, *size, device="meta"),))
    finally:
        model.train(was_training)


def record_modules(model: nn.Module, size: Sequence[int] = DRY_RUN_SIZE) -> dict[str, ModuleRecord]:
    """Dry-run ``model`` (:func:`dry_run`); a record per called module, the root named ``""``."""
    seen: dict[str, ModuleRecord] = {}
    counter = [0]

    def hook(name: str):
        def record(module: nn.Module, args: object, out: object) -> None:
            counter[0] += 1
            shape = tuple(out.shape) if isinstance(out, Tensor) else ()
            stride = map_stride(shape, size)
            seen[name] = ModuleRecord(stride, int(shape[1]) if stride else None, counter[0])

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    try:
        dry_run(model, size)
    finally:
        for h in handles:
            h.remove()
    return seen


def _children(records: dict[str, ModuleRecord], parent: str) -> list[str]:
    """Called direct children of ``parent``, in the order their last calls ended."""
    depth = 0 if parent == "" else parent.count(".") + 1
    inside = [n for n in records if n != parent and (parent == "" or n.startswith(parent + "."))]
    return sorted((n for n in inside if n.count(".") == depth), key=lambda n: records[n].done)


def _strides_under(records: dict[str, ModuleRecord], name: str) -> set[int]:
    return {r.stride for n, r in records.items() if (n == name or n.startswith(name + ".")) and r.stride}


def _spine(records: dict[str, ModuleRecord], needed: set[int]) -> list[str]:
    """Root, ..., trunk: each the child of the previous one whose descendants span ``needed``."""
    path = [""]
    while True:
        deeper = [c for c in _children(records, path[-1]) if needed <= _strides_under(records, c)]
        if len(deeper) != 1:
            return path
        path.append(deeper[0])


def _needed_strides(records: dict[str, ModuleRecord], strides: Sequence[int]) -> set[int]:
    # Every stride from 4 on, not only the requested ones: asking for res5 alone must not pick a
    # block inside ResNet's layer4 instead of layer4 itself.
    return {s for r in records.values() if r.stride and r.stride >= 4 for s in [r.stride]} | set(strides)


def stage_ends(records: dict[str, ModuleRecord], strides: Sequence[int], *, model_name: str) -> dict[int, str]:
    """stride -> name of the trunk child that ends that stride (e.g. ResNet: 4 -> "layer1").

    Raises:
        ConfigError: the trunk has no stage at one of ``strides`` (naming the strides it has).
    """
    trunk = _spine(records, _needed_strides(records, strides))[-1]
    ends = {records[c].stride: c for c in _children(records, trunk) if records[c].stride}  # the last one wins
    missing = [s for s in strides if s not in ends]
    if missing:
        where = f"the children of {trunk!r}" if trunk else "its top-level modules"
        raise ConfigError(
            f"TorchvisionBackbone model_name={model_name!r}: no stage of stride {missing} among {where} "
            f"(strides found: {sorted(ends)} on a {DRY_RUN_SIZE[0]}x{DRY_RUN_SIZE[1]} input). Give the nodes "
            "explicitly with return_nodes (names from torchvision.models.feature_extraction.get_graph_node_names)"
        )
    return {s: ends[s] for s in strides}


def modules_run_before(records: dict[str, ModuleRecord], stride: int) -> set[str]:
    """Names of the modules whose calls all end by the end of the last stage of stride <= ``stride``.

    Stages are the modules along the spine (root ... trunk) and their children, so a stem outside
    the trunk (RegNet's ``stem``) counts as the stride-2 stage. Freezing these freezes exactly what
    computes the feature maps up to that stride: the first block of the next stage (whose 1x1
    expansion still runs at the finer stride) is left alone. Empty if no stage is that fine.
    """
    spine = _spine(records, _needed_strides(records, ()))
    candidates = [c for parent in spine for c in _children(records, parent)]
    ends = [records[c].done for c in candidates if records[c].stride and records[c].stride <= stride]
    if not ends:
        return set()
    boundary = max(ends)
    return {n for n, r in records.items() if r.done <= boundary}
