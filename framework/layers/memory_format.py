"""Memory formats: which one a device trains fastest in, and conversions faster than ``Tensor.contiguous()``."""

from __future__ import annotations

import torch
from torch import Tensor

from framework.utils.cpu_features import cpu_features

__all__ = ["channels_last_trains_faster", "contiguous_nchw", "is_channels_last"]

#: Spatial positions per copied block: 1024 x C floats stay in cache while they are transposed.
_BLOCK = 1024


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is a 4-d tensor laid out NHWC (and not also NCHW, as a 1x1 map or one channel is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def channels_last_trains_faster(device: torch.device) -> bool:
    """Whether a convolutional network's forward + backward runs faster in channels_last on ``device``.

    Measured with oneDNN's convolutions (docs/benchmarks.md): on a CPU with AVX-512 the R50-FPN
    backbone's forward + backward takes 2.3 s in NHWC against 3.0 s in NCHW (batch 2 x 512x768,
    2 cores); on an AVX2 CPU NHWC is the slower one (13.3 s against 8.6 s). CUDA: not measured
    here, so NCHW, detectron2's and torchvision's layout. AVX-512 as the kernels see it: a process
    restricted to AVX2 (``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY``) trains in NCHW.
    """
    return device.type == "cpu" and cpu_features()["AVX-512"]


def contiguous_nchw(x: Tensor) -> Tensor:
    """``x.contiguous()`` for a channels_last (N, C, H, W) tensor, copied in cache-sized blocks.

    A plain ``contiguous()`` of an NHWC map transposes it with strided reads over the whole map,
    which on a CPU runs at half the speed of block-wise copies (130 ms vs 67 ms for a 256 x 200 x
    272 FPN level on 2 cores). Same values; any other tensor goes through ``contiguous()``.
    """
    if not is_channels_last(x):
        return x.contiguous()
    n, c, h, w = x.shape
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    src = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: NHWC memory is (N, HW, C) row-major
    dst = out.view(n, c, h * w)
    for start in range(0, h * w, _BLOCK):
        dst[:, :, start:start + _BLOCK].copy_(src[:, start:start + _BLOCK].transpose(1, 2))
    return out
