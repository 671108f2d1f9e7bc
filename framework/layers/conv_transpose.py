"""A transposed convolution whose stride equals its kernel, as one matrix product.

With ``stride == kernel_size`` (and no padding, dilation or groups) the kernel windows of a
transposed convolution do not overlap: input pixel (y, x) writes the output block
``[y*kh : (y+1)*kh, x*kw : (x+1)*kw]`` alone, and ``out[n, :, y*kh + i, x*kw + j] =
W[:, :, i, j]^T @ in[n, :, y, x] + b``. So the whole layer is one product of the (N*H*W, C_in)
pixels with the (C_in, kh*kw*C_out) weights, followed by one copy that puts each pixel's
kh x kw block in place. Mask R-CNN's mask head upsamples with such a layer (2x2, stride 2).

On a CPU this is several times faster than torch's transposed convolution in training: oneDNN's
backward for it runs at a fraction of the convolution rate, most of all in channels_last (64 -> 64
channels, 100 RoIs at 14x14, 2 cores, AVX-512: forward + backward 37 ms in float32, 26 ms in
bf16, against a few ms for the products; ``tools/benchmark.py`` measures the whole model).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from framework.layers.memory_format import is_channels_last

__all__ = ["conv_transpose_non_overlapping"]


def conv_transpose_non_overlapping(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=weight.shape[2:])`` as one matrix product.

    The same sums (over the input channels, one product per output value) in another order:
    equal to torch's to float rounding (tests/layers/test_conv_transpose.py: rtol 1e-5, atol
    1e-5 in float32, output and every gradient). Under CPU autocast the product runs in bf16 as
    the convolution would.

    Args:
        x: (N, C_in, H, W), any memory format.
        weight: (C_in, C_out, kh, kw), a ``ConvTranspose2d``'s weight.
        bias: (C_out,) or None.

    Returns:
        (N, C_out, H*kh, W*kw) in ``x``'s memory format (channels_last stays channels_last).
    """
    n, c_in, h, w = x.shape
    c_out, kh, kw = weight.shape[1:]
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in)  # a view when channels_last
    # columns ordered (i, j, c_out), so that each output pixel's channels stay together
    columns = weight.permute(0, 2, 3, 1).reshape(c_in, kh * kw * c_out)
    if bias is None:
        blocks = pixels @ columns
    else:
        blocks = torch.addmm(bias.repeat(kh * kw), pixels, columns)
    blocks = blocks.view(n, h, w, kh, kw, c_out)
    if is_channels_last(x):  # (n, h, i, w, j, c): the NHWC output's memory order
        return blocks.permute(0, 1, 3, 2, 4, 5).reshape(n, h * kh, w * kw, c_out).permute(0, 3, 1, 2)
    return blocks.permute(0, 5, 1, 3, 2, 4).reshape(n, c_out, h * kh, w * kw)
