"""Mixed precision by name: the ``"none" | "auto" | "bf16" | "fp16"`` knobs of the trainer and the model.

One home for the name -> dtype table and the rules the two knobs share: fp16 autocast is for CUDA
only (on CPU it is slow and, in training, would need a GradScaler that only CUDA has), bf16 runs
on CPU and CUDA, and ``"auto"`` picks bf16 only where the hardware computes it natively (a CPU
with AVX512_BF16 or AMX, a CUDA GPU with bf16), fp16 on an older CUDA GPU, float32 elsewhere:
oneDNN emulates bf16 on other CPUs, slower than float32 (docs/benchmarks.md).

Under autocast the RPN's and the box predictor's last layers run in float32 (:func:`float32_layers`):
their outputs are ranked, thresholded and decoded, where bf16's 8-bit mantissa would show.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from framework.errors import ConfigError, did_you_mean
from framework.utils.cpu_features import has_native_bf16

__all__ = ["AMP_DTYPES", "AMP_MODES", "check_amp", "amp_autocast", "float32_layers", "resolve_amp"]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("none", "auto", *AMP_DTYPES)


def check_amp(mode: str, device_type: str | None, *, knob: str) -> None:
    """Check a mixed-precision name, and that it can run on ``device_type``.

    Args:
        mode: ``"none"``, ``"auto"``, ``"bf16"`` or ``"fp16"``.
        device_type: ``"cpu"``, ``"cuda"``, ...; ``None`` checks the name only (the device is not
            known yet).
        knob: the option's name as the user wrote it (``"amp"``, ``"inference_amp"``),
            for the message.

    Raises:
        ConfigError: an unknown name, or fp16 on a device other than CUDA.
    """
    if mode not in AMP_MODES:
        choices = list(AMP_MODES)
        raise ConfigError(f"{knob} {mode!r} is not one of {choices}.{did_you_mean(str(mode), choices)}")
    if mode == "fp16" and device_type is not None and device_type != "cuda":
        raise ConfigError(
            f"{knob}='fp16' needs the model on a CUDA device, but it is on {device_type!r}; "
            f"use {knob}='bf16' (supported on CPU) or {knob}='none'"
        )


def resolve_amp(mode: str, device_type: str, *, knob: str) -> str:
    """The precision ``mode`` runs in on ``device_type``: ``"auto"`` becomes ``"bf16"`` where
    :func:`framework.utils.cpu_features.has_native_bf16`, ``"fp16"`` on a CUDA GPU without bf16,
    ``"none"`` elsewhere; the other names are returned as they are.

    Raises:
        ConfigError: as :func:`check_amp`.
    """
    check_amp(mode, device_type, knob=knob)
    if mode != "auto":
        return mode
    if has_native_bf16(device_type):
        return "bf16"
    return "fp16" if device_type == "cuda" else "none"


def amp_autocast(mode: str, device_type: str, *, knob: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``mode`` (resolved by :func:`resolve_amp`) on ``device_type``; a no-op
    context for float32.

    Raises:
        ConfigError: as :func:`check_amp`.
    """
    mode = resolve_amp(mode, device_type, knob=knob)
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES[mode])


def float32_layers(x: Tensor, *layers: nn.Module) -> tuple[Tensor, ...]:
    """Each of ``layers`` applied to ``x``, computed in float32 even under autocast: for the last
    layers of a head whose outputs are ranked or decoded.

    Under autocast a linear or convolution layer rounds its output to bf16 / fp16 (8 or 11 bits
    of mantissa). The RPN's objectness logits are ranked over every anchor (top-k, then NMS),
    where bf16 rounding makes ties, and the box predictor's scores and deltas are thresholded and
    decoded; so these are computed from the (already rounded) input with float32 weights and
    accumulation. ``x`` is cast once for all ``layers``. A plain call when autocast is off:
    float32 models are unchanged.

    Not used for the mask predictor: its logits are compared with 0 (a probability of 0.5),
    where bf16's relative rounding is smallest, and casting its (R, 256, 28, 28) input costs more
    than the layer itself (R50-FPN bf16 inference: about 40 ms of ~1 s per image).

    Args:
        x: the layers' input, in any floating dtype.
        layers: modules whose parameters are float32 (``nn.Linear``, ``nn.Conv2d``, ...).
    Returns:
        ``tuple(layer(x) for layer in layers)``, float32 under autocast.
    """
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return tuple(layer(x) for layer in layers)
    with torch.autocast(device_type, enabled=False):
        x = x.float()
        return tuple(layer(x) for layer in layers)
