"""The in-graph torchvision mask pasting equals the eager one (paste_masks_in_image_torchvision)."""

from __future__ import annotations

import torch

from framework.export.paste import paste_masks_torchvision
from framework.layers.mask_ops import paste_masks_in_image_torchvision

#: A pixel may differ only where the in-graph value is this close to the threshold (float rounding:
#: the resize's products are summed in another order than torch's kernel).
NEAR = 1e-5


def _paste(masks, boxes, h, w, threshold=0.5):
    return paste_masks_torchvision(masks, boxes, h, w, torch.tensor(float(h)), torch.tensor(float(w)),
                                   threshold=threshold)


def _random_boxes(generator, n, h, w):
    """Boxes from below one pixel to larger than the image, many partly off it (unclipped)."""
    corner = torch.rand(n, 2, generator=generator) * torch.tensor([w + 40.0, h + 40.0]) - 20
    size = torch.rand(n, 2, generator=generator) ** 3 * 1.2 * max(h, w)  # many tiny, a few huge
    size[: n // 8] *= 0.02  # below one pixel, and below M + 2 pixels
    return torch.cat([corner, corner + size], dim=1)


def test_equals_eager_pasting_up_to_rounding_at_the_threshold():
    generator = torch.Generator().manual_seed(0)
    worst_iou, differing, total = 1.0, 0, 0
    for n, h, w, m in [(64, 123, 157, 28), (48, 97, 131, 14), (0, 40, 50, 28)]:
        masks = torch.rand(n, m, m, generator=generator)
        boxes = _random_boxes(generator, n, h, w)
        out = _paste(masks, boxes, h, w).bool()
        assert out.shape == (n, h, w)
        eager = paste_masks_in_image_torchvision(masks, boxes, (h, w), 0.5)
        near = _paste(masks, boxes, h, w, 0.5 - NEAR) != _paste(masks, boxes, h, w, 0.5 + NEAR)
        assert not ((out != eager) & ~near).any(), "a pixel differs that is not within rounding of the threshold"
        for a, b in zip(out, eager):
            union = (a | b).sum().item()
            worst_iou = min(worst_iou, 1.0 if union == 0 else (a & b).sum().item() / union)
        differing += (out != eager).sum().item()
        total += out.numel()
    assert worst_iou >= 0.99
    assert differing / max(total, 1) <= 1e-5  # measured: 0 of 1.8 million pixels (docs/deployment.md)


def test_hand_computed_square():
    # a 2x2 all-ones mask on (2, 2, 6, 6): padded to 4 cells [0, 1, 1, 0], the box grown by 4/2 about
    # its centre to pixels 0..8 (w = 9), so pixel j reads src = (j + 0.5) * 4/9 - 0.5 and sums the
    # weights of cells 1 and 2: j = 0..8 -> 0, 1/6, 11/18, 1, 1, 1, 11/18, 1/6, 0 per axis. The
    # product is >= 0.5 on pixels 2..6 except the four corners (11/18 squared = 0.37).
    masks, boxes = torch.ones(1, 2, 2), torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    expected = torch.zeros(10, 10, dtype=torch.uint8)
    expected[2:7, 2:7] = 1
    expected[[2, 2, 6, 6], [2, 6, 2, 6]] = 0
    assert torch.equal(_paste(masks, boxes, 10, 10)[0], expected)
    assert torch.equal(paste_masks_in_image_torchvision(masks, boxes, (10, 10), 0.5)[0], expected.bool())
    # threshold 0.1: the 1/6 ring counts where the other axis is >= 0.6 (1/6 * 11/18 = 0.102)
    low = _paste(masks, boxes, 10, 10, threshold=0.1)[0]
    assert low[4, 1] == 1 and low[2, 1] == 1 and low[1, 1] == 0 and low[4, 0] == 0


def test_box_off_the_image_is_cut_and_an_empty_batch_is_empty():
    # the square's profile above, on (-2, -2, 2, 2): grown to pixels -4..4, so pixels -1..1 read 1,
    # pixel 2 reads 11/18 and pixel 3 1/6; in the 6x6 image that is rows and columns 0..2 without
    # the corner (2, 2)
    masks, boxes = torch.ones(1, 2, 2), torch.tensor([[-2.0, -2.0, 2.0, 2.0]])
    expected = torch.zeros(6, 6, dtype=torch.uint8)
    expected[:3, :3] = 1
    expected[2, 2] = 0
    assert torch.equal(_paste(masks, boxes, 6, 6)[0], expected)
    assert torch.equal(paste_masks_in_image_torchvision(masks, boxes, (6, 6), 0.5)[0], expected.bool())
    assert _paste(torch.ones(0, 28, 28), torch.zeros(0, 4), 5, 7).shape == (0, 5, 7)
