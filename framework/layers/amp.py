"""Mixed precision by name: the ``"none" | "bf16" | "fp16"`` knobs of the trainer and the model.

One home for the name -> dtype table and the rule the two knobs share: fp16 autocast is for CUDA
only (on CPU it is slow and, in training, would need a GradScaler that only CUDA has), bf16 runs
on CPU and CUDA.
"""

from __future__ import annotations

import contextlib

import torch

from framework.errors import ConfigError, did_you_mean

__all__ = ["AMP_DTYPES", "AMP_MODES", "check_amp", "amp_autocast"]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("none", *AMP_DTYPES)


def check_amp(mode: str, device_type: str | None, *, knob: str) -> None:
    """Check a mixed-precision name, and that it can run on ``device_type``.

    Args:
        mode: ``"none"``, ``"bf16"`` or ``"fp16"``.
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


def amp_autocast(mode: str, device_type: str, *, knob: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``mode`` on ``device_type``; a no-op context for ``"none"``.

    Raises:
        ConfigError: as :func:`check_amp`.
    """
    check_amp(mode, device_type, knob=knob)
    if mode == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES[mode])
