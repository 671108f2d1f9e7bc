"""The model of a distributed run: ``DistributedDataParallel`` around it, SyncBatchNorm optionally.

The trainer steps the wrapped model; everything else (checkpointer, evaluation, hooks that run
inference) uses the plain module (:func:`unwrap_model`), so checkpoint keys never carry DDP's
``module.`` prefix and inference never enters DDP's collectives.
"""

from __future__ import annotations

import inspect
import logging

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from framework.errors import ConfigError
from framework.registry import config_section
from framework.utils import comm

__all__ = ["create_ddp_model", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (else ``model``)."""
    while isinstance(model, (DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@config_section("ddp")
def create_ddp_model(
    model: nn.Module,
    /,
    *,
    sync_bn: bool = False,
    find_unused_parameters: bool = False,
    sync_buffers: bool = False,
) -> nn.Module:
    """Wrap ``model`` in DDP when the run has several processes; return it unchanged otherwise.

    Gradients are averaged over ranks, so with ``total_batch_size`` images per step split over
    the ranks a step equals one process's step on the whole batch (detectron2's semantics), as long
    as the losses are means over images.

    Args:
        model: on this rank's device, with its parameters identical on all ranks (DDP broadcasts
            rank 0's at construction anyway).
        sync_bn: convert ``nn.BatchNorm*`` layers to ``nn.SyncBatchNorm`` (statistics over the
            whole batch of all ranks; CUDA only). ``FrozenBatchNorm2d`` is not affected. The
            conversion reuses the parameters and buffers, so an optimizer built before still works.
        find_unused_parameters: let DDP handle parameters that get no gradient in a step (slower;
            needed by heads that skip a branch for some batches).
        sync_buffers: copy rank 0's buffers to all ranks at every forward (DDP's default); off as
            in detectron2 (``broadcast_buffers=False``), buffers being either frozen or per-rank
            BatchNorm statistics. Evaluation during training copies rank 0's buffers first anyway.

    Returns:
        the DDP-wrapped model (one process: ``model`` itself).
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if sync_bn:
        if device.type != "cuda":
            raise ConfigError("config path 'ddp.sync_bn': SyncBatchNorm needs CUDA devices (torch has no CPU kernel); "
                              f"the model is on {device}. Use ddp.sync_bn=false on CPU.")
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            logger.warning("ddp.sync_bn=true, but the model has no BatchNorm layer to convert (frozen norms stay frozen)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # torch >= 2.14 names the forward-time copy forward_sync_buffers (broadcast_buffers is deprecated).
    buffers_arg = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_ARGS else "broadcast_buffers"
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **{buffers_arg: sync_buffers},
    )


_DDP_ARGS = frozenset(inspect.signature(DistributedDataParallel.__init__).parameters)
