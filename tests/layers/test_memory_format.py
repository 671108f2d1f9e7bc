"""contiguous_nchw: a block-wise NHWC -> NCHW copy with contiguous()'s result."""

import pytest
import torch

from framework.layers.memory_format import contiguous_nchw


@pytest.mark.parametrize("shape", [(1, 256, 40, 52), (2, 3, 5, 7), (1, 8, 1, 1)])
def test_contiguous_nchw_is_contiguous(shape):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    out = contiguous_nchw(x)
    assert out.is_contiguous() and torch.equal(out, x.contiguous())
    nchw = torch.randn(shape)
    assert contiguous_nchw(nchw) is nchw
