"""Large-scale jitter: the scaled size, the crop and the padding of the image, boxes, polygons and bit
masks by hand; the output size is fixed; the component's draws; training only; knobs checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.config.compose import compose
from framework.data.augmentations import AugSample, LargeScaleJitter, crop_and_pad_to, scale_jitter, scale_jitter_shape
from framework.data.mapper import DatasetMapper
from framework.errors import ConfigError
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks


def square(x0, y0, x1, y1):
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def assert_boxes(boxes, expected):
    """Boxes equal to ``expected`` to 1e-4 px (torchvision computes the box scale factors in float32)."""
    torch.testing.assert_close(boxes.as_subclass(torch.Tensor), torch.tensor(expected, dtype=torch.float64),
                               atol=1e-4, rtol=0)


def sample_of(image, boxes, polygons=None, bitmasks=None):
    h, w = image.shape[-2:]
    inst = Instances((h, w), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                     gt_classes=torch.arange(len(boxes)))
    if polygons is not None:
        inst.gt_masks = PolygonMasks(polygons)
    if bitmasks is not None:
        inst.gt_masks = BitMasks(bitmasks)
    return AugSample.from_instances(image, inst)


@pytest.mark.parametrize("hw, size, scale, expected", [
    ((200, 400), (256, 256), 0.5, (64, 128)),   # factor min(128/200, 128/400) = 0.32
    ((100, 100), (256, 256), 2.0, (512, 512)),  # factor 5.12
    ((10, 5), (5, 5), 1.0, (5, 2)),             # factor 0.5: 2.5 rounds half to even, as numpy
    ((1000, 10), (16, 16), 0.1, (2, 1)),        # factor 0.0016: a side is at least 1
])
def test_scale_jitter_shape(hw, size, scale, expected):
    assert scale_jitter_shape(*hw, size, scale) == expected


def test_downscale_pads_bottom_and_right_and_the_padding_is_no_object():
    image = torch.arange(3 * 40 * 80, dtype=torch.int64).remainder(100).to(torch.uint8).reshape(3, 40, 80)
    bit = torch.zeros(2, 40, 80, dtype=torch.bool)
    bit[0, 10:20, 20:40] = True
    bit[1, 30:40, 70:80] = True  # touches the bottom-right corner, beside the padding to come
    boxes = [[20.0, 10.0, 40.0, 20.0], [70.0, 30.0, 80.0, 40.0]]
    # 40x80 into 32x32 at scale 1: factor min(32/40, 32/80) = 0.4 -> 16x32, then 16 rows of padding.
    out = scale_jitter(sample_of(image, boxes, bitmasks=bit), (32, 32), scale=1.0, fraction=0.7, pad_value=128)
    assert out.image_size == (32, 32) and out.image.dtype == torch.uint8
    assert bool((out.image[:, 16:] == 128).all()) and not bool((out.image[:, :16] == 128).all())
    assert_boxes(out.boxes, [[8.0, 4.0, 16.0, 8.0], [28.0, 12.0, 32.0, 16.0]])
    assert tuple(out.boxes.canvas_size) == (32, 32)
    # Nearest-exact: output row i reads source row floor((i + 0.5) / 0.4): rows 4..7 read 11..18.
    expected = torch.zeros(2, 32, 32, dtype=torch.bool)
    expected[0, 4:8, 8:16] = True
    expected[1, 12:16, 28:32] = True
    assert torch.equal(out.masks.tensor, expected)  # nothing in the padded rows 16..31

    polygons = [square(20, 10, 40, 20), square(70, 30, 80, 40)]
    out = scale_jitter(sample_of(image, boxes, polygons=polygons), (32, 32), scale=1.0, fraction=0.7, pad_value=128)
    assert out.masks.polygons[0][0].tolist() == pytest.approx([8, 4, 16, 4, 16, 8, 8, 8])


def test_upscale_crops_and_removes_the_objects_cropped_away():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    boxes = [[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 10.0, 10.0], [30.0, 2.0, 38.0, 12.0]]
    polygons = [square(*b) for b in boxes]
    # Scale 2: factor 64/40 = 1.6 -> 64x64; 32 px too many each way, fraction 0.25: rows and columns 8..39.
    out = scale_jitter(sample_of(image, boxes, polygons=polygons), (32, 32), scale=2.0, fraction=0.25, pad_value=128)
    assert out.image_size == (32, 32)
    # [0, 0, 6.4, 6.4] and [48, 3.2, 60.8, 19.2] lie outside rows/columns 8..39: removed.
    assert out.classes.tolist() == [0, 2]
    assert_boxes(out.boxes, [[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 8.0, 8.0]])  # clamped to the crop
    # Polygons are translated only (cut where they are rasterised, inside their clamped box).
    assert out.masks.polygons[1][0].tolist() == pytest.approx([-4.8, -4.8, 8, -4.8, 8, 8, -4.8, 8])


def test_crop_and_pad_offsets_round_half_to_even_and_one_side_may_crop_while_the_other_pads():
    image = torch.arange(10 * 13, dtype=torch.int64).reshape(1, 10, 13)
    out = crop_and_pad_to(sample_of(image, []), (8, 8), fraction=0.5, pad_value=0)
    # Excess 2 rows -> offset 1; 5 columns -> 2.5 -> 2 (numpy's round, as detectron2).
    assert torch.equal(out.image, image[:, 1:9, 2:10])
    tall = torch.arange(20 * 5, dtype=torch.int64).reshape(1, 20, 5)
    bit = torch.zeros(1, 20, 5, dtype=torch.bool)
    bit[0, 14:18, 1:4] = True
    out = crop_and_pad_to(sample_of(tall, [[1.0, 14.0, 4.0, 18.0]], bitmasks=bit), (8, 8), fraction=1.0, pad_value=-1)
    assert torch.equal(out.image[:, :, :5], tall[:, 12:20]) and bool((out.image[:, :, 5:] == -1).all())
    assert out.boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]
    assert out.masks.tensor[0].nonzero().min(0).values.tolist() == [2, 1]
    assert out.masks.tensor.shape == (1, 8, 8) and not bool(out.masks.tensor[0, :, 5:].any())


def test_the_component_draws_scale_then_crop_position_and_always_gives_its_size():
    lsj = LargeScaleJitter(image_size=48, min_scale=0.5, max_scale=1.5)
    for seed, (h, w) in enumerate([(30, 70), (90, 40), (48, 48), (200, 13), (7, 60)]):
        image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
        sample = sample_of(image, [[0.0, 0.0, w / 2, h / 2]], polygons=[square(0, 0, w / 2, h / 2)])
        torch.manual_seed(seed)
        out = lsj(sample)
        torch.manual_seed(seed)
        scale = 0.5 + 1.0 * torch.rand((), dtype=torch.float64).item()
        fraction = torch.rand((), dtype=torch.float64).item()
        expected = scale_jitter(sample, (48, 48), scale=scale, fraction=fraction, pad_value=128.0)
        assert out.image_size == (48, 48) and torch.equal(out.image, expected.image)
        assert torch.equal(out.boxes, expected.boxes)


def test_training_only_and_knobs_checked():
    with pytest.raises(ConfigError, match=r"augmentations\.0 \(LargeScaleJitter\) is for training only"):
        DatasetMapper(is_train=False, augmentations=["LargeScaleJitter"])
    with pytest.raises(ConfigError, match="0 < min_scale <= max_scale"):
        LargeScaleJitter(min_scale=2.0, max_scale=1.0)
    with pytest.raises(ConfigError, match="image_size must be a positive int"):
        LargeScaleJitter(image_size=0)
    with pytest.raises(ConfigError, match=r"input\.train\.augmentations\.0\.image_sise.*Did you mean 'image_size'"):
        compose(["input.train.augmentations=[{name: LargeScaleJitter, image_sise: 64}]"])
    with pytest.raises(ConfigError, match=r"input\.train\.augmentations\.2\.blur_sigmaa.*Did you mean 'blur_sigma'"):
        compose(["experiment=lsj_copy_paste_quick", "+input.train.augmentations.2.blur_sigmaa=1.0"])
