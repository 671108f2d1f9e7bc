"""ImageList.from_tensors: padded sizes, padded values, unpadded access."""

import pytest
import torch

from framework.structures import ImageList


def _images():
    return [
        torch.full((3, 10, 20), 1.0),
        torch.full((3, 33, 15), 2.0),
        torch.full((3, 5, 40), 3.0),
    ]


def test_pad_to_multiple_of_32():
    il = ImageList.from_tensors(_images(), size_divisibility=32, pad_value=-1.0)
    # max (H, W) = (33, 40), rounded up to multiples of 32
    assert il.tensor.shape == (3, 3, 64, 64)
    assert il.image_sizes == [(10, 20), (33, 15), (5, 40)]
    assert len(il) == 3
    t = il.tensor
    assert (t[0, :, :10, :20] == 1).all() and (t[0, :, 10:, :] == -1).all() and (t[0, :, :, 20:] == -1).all()
    assert (t[1, :, :33, :15] == 2).all() and (t[1, :, 33:, :] == -1).all() and (t[1, :, :, 15:] == -1).all()
    assert (t[2, :, :5, :40] == 3).all() and (t[2, :, 5:, :] == -1).all() and (t[2, :, :, 40:] == -1).all()
    # each image occupies exactly its own pixels: 10*20 + 33*15 + 5*40 per channel
    assert (t != -1).sum().item() == 3 * (200 + 495 + 200)


def test_no_divisibility_pads_to_max_only():
    il = ImageList.from_tensors(_images())
    assert il.tensor.shape == (3, 3, 33, 40)
    assert il.tensor[0, 0, 10, 0].item() == 0.0
    # already a multiple stays put
    assert ImageList.from_tensors([torch.zeros(1, 32, 64)], size_divisibility=32).tensor.shape == (1, 1, 32, 64)


def test_getitem_unpadded_and_to():
    imgs = _images()
    imgs[1] = torch.arange(3 * 33 * 15, dtype=torch.float32).view(3, 33, 15)
    il = ImageList.from_tensors(imgs, size_divisibility=32)
    assert il[1].shape == (3, 33, 15)
    assert torch.equal(il[1], imgs[1])
    moved = il.to(torch.float64)
    assert moved.tensor.dtype == torch.float64 and moved.image_sizes == il.image_sizes
    assert il.device == torch.device("cpu")


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match="item 1"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
