"""paste_masks_in_image: pixel-exact placement at boxes, thresholds, empty input."""

import pytest
import torch

from framework.layers.mask_ops import paste_masks_in_image
from framework.structures import Boxes


def test_all_ones_fills_exactly_the_box_pixels():
    masks = torch.ones(1, 4, 4)
    out = paste_masks_in_image(masks, torch.tensor([[2.0, 3, 6, 8]]), (10, 12))
    assert out.dtype == torch.bool and out.shape == (1, 10, 12)
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[3:8, 2:6] = True
    assert torch.equal(out[0], expected)
    # boundary by hand: column 1 (centre 1.5) maps to mask x = -1.0 -> 0;
    # column 2 (centre 2.5) maps to x = 0.0 -> 1; column 5 -> x = 3.0 -> 1; column 6 -> x = 4.0 -> 0
    assert out[0, 5, 1:7].tolist() == [False, True, True, True, True, False]
    assert out[0, 2:9, 3].tolist() == [False, True, True, True, True, True, False]


def test_threshold_at_fractional_box_edge():
    masks = torch.ones(1, 4, 4)
    boxes = torch.tensor([[2.5, 0.0, 6.5, 4.0]])
    # column 2's centre 2.5 sits on the box edge: mask x = -0.5, half way to the zero padding -> 0.5
    at_half = paste_masks_in_image(masks, boxes, (4, 8), threshold=0.5)
    assert at_half[0, 0].tolist() == [False, False, True, True, True, True, True, False]
    above = paste_masks_in_image(masks, boxes, (4, 8), threshold=0.6)
    assert above[0, 0].tolist() == [False, False, False, True, True, True, False, False]
    soft = paste_masks_in_image(masks, boxes, (4, 8), threshold=-1)
    assert soft.dtype == torch.uint8
    assert soft[0, 0].tolist() == [0, 0, 127, 255, 255, 255, 127, 0]


def test_probabilities_and_several_masks():
    left = torch.zeros(4, 4)
    left[:, :2] = 0.9  # left half likely foreground
    masks = torch.stack([left, torch.full((4, 4), 0.4)])
    boxes = Boxes([[0.0, 0, 4, 4], [4.0, 4, 8, 8]])
    out = paste_masks_in_image(masks, boxes, (8, 8))
    expected0 = torch.zeros(8, 8, dtype=torch.bool)
    # column 1 samples x = 1.0 exactly (0.9); column 2 samples x = 2.0 (0.0)
    expected0[:4, :2] = True
    assert torch.equal(out[0], expected0)
    assert not out[1].any()  # 0.4 < 0.5 everywhere
    assert paste_masks_in_image(masks, boxes, (8, 8), threshold=0.3)[1, 4:, 4:].all()


def test_box_partly_outside_image_is_cropped():
    out = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[-2.0, -2, 3, 3]]), (5, 5))
    # a mask cell is 2.5 px; pixel 2 (centre 2.5) samples mask coordinate 4.5 / 5 * 2 - 0.5 = 1.3,
    # i.e. 0.7 of the last cell and 0.3 of the zero padding: 0.7 on the edges, 0.7 * 0.7 = 0.49 at (2, 2)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[:3, :3] = True
    expected[2, 2] = False
    assert torch.equal(out[0], expected)
    soft = paste_masks_in_image(torch.ones(1, 2, 2), torch.tensor([[-2.0, -2, 3, 3]]), (5, 5), threshold=-1)
    # row 2 weighs 0.7; columns 0-1 weigh 1, column 2 0.7, column 3 (coordinate 1.7) 0.3, column 4 0
    assert soft[0, 2].tolist() == [178, 178, 124, 53, 0]  # uint8(255 * 0.7), (255 * 0.49), (255 * 0.21)


def test_empty_and_bad_inputs():
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (7, 9))
    assert out.shape == (0, 7, 9) and out.dtype == torch.bool
    with pytest.raises(ValueError, match="square"):
        paste_masks_in_image(torch.zeros(1, 28, 14), torch.zeros(1, 4), (7, 9))
    with pytest.raises(ValueError, match="2 boxes for 1 masks"):
        paste_masks_in_image(torch.zeros(1, 28, 28), torch.zeros(2, 4), (7, 9))


def test_cropped_cpu_path_matches_whole_image_path():
    # The CPU path samples only around each box; the GPU path samples the whole image in one batch.
    # Both must give the same pixels.
    from framework.layers.mask_ops import _paste_chunk

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 7, 7, generator=g)
    xy0 = torch.rand(5, 2, generator=g) * 20 - 3
    boxes = torch.cat([xy0, xy0 + 1 + torch.rand(5, 2, generator=g) * 15], dim=1)
    cropped = paste_masks_in_image(masks, boxes, (21, 25))
    whole, region = _paste_chunk(masks[:, None], boxes, 21, 25, crop_to_boxes=False)
    assert region == ()
    assert torch.equal(cropped, whole >= 0.5)
    assert cropped.any()
