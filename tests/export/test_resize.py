"""The in-graph test-time resize equals the mapper's: the same output size and PIL's pixels, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from framework.data.augmentations import resize_shortest_edge_shape
from framework.export.resize import pil_bilinear_weights, resize_image, resize_shape
from framework.layers.resize import resize_shortest_edge_torchvision

# (height, width, short_edge, max_size): down- and upscaling, portrait and landscape, the cap on the
# long side, an exact .5 rounding case (64 x 65 -> 800 x 812.5 -> 813), equal sizes, 0 = no resize.
CASES = [(480, 640, 224, 400), (100, 1000, 224, 400), (37, 53, 800, 1333), (600, 457, 224, 400),
         (801, 1200, 800, 1333), (64, 65, 800, 1333), (300, 300, 224, 400), (224, 299, 224, 400),
         (5, 700, 224, 400), (123, 77, 0, 400)]


def _f64(x: int) -> torch.Tensor:
    return torch.tensor(float(x), dtype=torch.float64)


@pytest.mark.parametrize("h,w,short,cap", CASES)
def test_size_and_pixels_equal_the_mapper(h, w, short, cap):
    image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    new_h, new_w = resize_shape(_f64(h), _f64(w), short_edge=short, max_size=cap)
    assert (int(new_h), int(new_w)) == resize_shortest_edge_shape(h, w, short, cap)
    out = resize_image(torch.from_numpy(image), int(new_h), int(new_w), new_h.double(), new_w.double())
    expected = np.asarray(Image.fromarray(image).resize((int(new_w), int(new_h)), Image.BILINEAR)).transpose(2, 0, 1)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


def test_hand_computed_rounding():
    # 64 x 65 to short edge 800: scale 12.5, long side 812.5 rounds half up to 813 (as detectron2)
    new_h, new_w = resize_shape(_f64(64), _f64(65), short_edge=800, max_size=1333)
    assert (int(new_h), int(new_w)) == (800, 813)
    # the torchvision rule floors: min(800 / 64, 1333 / 65) = 12.5 -> 800 x 812
    new_h, new_w = resize_shape(_f64(64), _f64(65), short_edge=800, max_size=1333, style="torchvision")
    assert (int(new_h), int(new_w)) == (800, 812)


def test_weights_halving_by_hand():
    # 4 -> 2 pixels: scale 2, the triangle widened to support 2; output pixel 0 has centre 1.0 and
    # taps 0..2 (xmax = floor(1 + 2 + 0.5) = 3) with weights 0.75, 0.75, 0.25 -> normalised 3/7, 3/7, 1/7
    w = pil_bilinear_weights(4, 2, _f64(2), _f64(4))
    one = float(1 << 22)
    expected_row0 = [np.floor(3 / 7 * one + 0.5), np.floor(3 / 7 * one + 0.5), np.floor(1 / 7 * one + 0.5), 0.0]
    np.testing.assert_array_equal(w[0].numpy(), expected_row0)
    np.testing.assert_array_equal(w[1].numpy(), expected_row0[::-1])


@pytest.mark.parametrize("short,cap", [(224, 400), (800, 1333)])
def test_sizes_equal_the_mapper_on_a_sweep(short, cap):
    # every height 2..699 against widths 2..699 in steps of 7, as one batched call (the operations are
    # elementwise); a number divided by a tensor (torch: number * (1 / t), one ulp off) gave 389 px
    # -> 223 instead of 224 with the torchvision rule, and 31 sizes of this sweep off by one pixel
    # with detectron2's
    hs, ws = torch.meshgrid(torch.arange(2, 700, dtype=torch.float64), torch.arange(2, 700, 7, dtype=torch.float64),
                            indexing="ij")
    hs, ws = hs.flatten(), ws.flatten()
    for style in ("detectron2", "torchvision"):
        new_h, new_w = resize_shape(hs, ws, short_edge=short, max_size=cap, style=style)
        got = list(zip(new_h.tolist(), new_w.tolist()))
        sizes = [(int(h), int(w)) for h, w in zip(hs.tolist(), ws.tolist())]
        if style == "detectron2":
            expected = [resize_shortest_edge_shape(h, w, short, cap) for h, w in sizes]
        else:  # the torchvision resize's output size, from a blank image of each size would be slow:
            # its rule (framework.layers.resize.resize_shortest_edge_torchvision), in Python floats
            expected = [(math.floor(h * s), math.floor(w * s))
                        for h, w in sizes for s in [min(short / min(h, w), cap / max(h, w))]]
        wrong = [(size, g, e) for size, g, e in zip(sizes, got, expected) if g != e]
        assert not wrong, f"{style}: {len(wrong)} sizes differ, e.g. {wrong[:3]}"
    assert resize_shortest_edge_torchvision(torch.zeros(1, 389, 517), 224, 400).shape[-2:] == (224, 297)
