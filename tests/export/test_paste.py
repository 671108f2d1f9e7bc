"""The in-graph mask pasting equals the eager (detectron2) pasting."""

from __future__ import annotations

import torch

from framework.export.paste import paste_masks_detectron2
from framework.layers.mask_ops import paste_masks_in_image


def _paste(masks, boxes, h, w, threshold=0.5):
    return paste_masks_detectron2(masks, boxes, h, w, torch.tensor(float(h)), torch.tensor(float(w)),
                                  threshold=threshold)


def test_equals_eager_pasting_on_random_boxes():
    torch.manual_seed(0)
    n, h, w = 60, 123, 157
    masks = torch.rand(n, 28, 28)
    corner = torch.rand(n, 2) * torch.tensor([w, h]) - 10
    boxes = torch.cat([corner, corner + torch.rand(n, 2) * 120 + 0.5], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    out = _paste(masks, boxes, h, w)
    assert out.dtype == torch.uint8 and out.shape == (n, h, w)
    assert torch.equal(out.bool(), paste_masks_in_image(masks, boxes, (h, w), 0.5))


def test_hand_computed_square():
    # a 2x2 all-ones mask on the box (2, 2, 6, 6), cells of 2 px: pixel 2 (centre 2.5) sits at
    # mask coordinate -0.25, weight 0.75 per axis -> 0.5625 >= 0.5 at the corner; pixel 1 (centre
    # 1.5) at -0.75, weight 0.25 -> background, as pixel 6 (1.75 past cell 1); so pixels 2..5.
    out = _paste(torch.ones(1, 2, 2), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.uint8)
    expected[2:6, 2:6] = 1
    assert torch.equal(out[0], expected)
    # with threshold 0.2 pixel 1's 0.25 (x) * 1 (y) counts, within the one-pixel margin
    low = _paste(torch.ones(1, 2, 2), torch.tensor([[2.0, 2.0, 6.0, 6.0]]), 8, 8, threshold=0.2)
    assert low[0, 3, 1] == 1 and low[0, 3, 0] == 0 and low[0, 1, 1] == 0  # corner: 0.25 * 0.25 < 0.2
    assert _paste(torch.ones(0, 28, 28), torch.zeros(0, 4), 5, 7).shape == (0, 5, 7)
