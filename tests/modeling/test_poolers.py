import pytest
import torch

from framework.errors import ConfigError
from framework.modeling.poolers import (
    ROIAlign,
    ROIAlignV2,
    ROIPool,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from framework.registry import ROI_POOLERS
from framework.structures.boxes import Boxes

FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)  # levels 2..5


def _square(x0, y0, size):
    return [x0, y0, x0 + size, y0 + size]


def test_assign_levels_canonical_224_at_4():
    boxes = Boxes(torch.tensor([_square(0, 0, s) for s in (112, 224, 448, 223.9, 10, 2000)]))
    levels = assign_boxes_to_levels([boxes], min_level=2, max_level=5, canonical_box_size=224, canonical_level=4)
    # 112 -> 3, 224 -> 4, 448 -> 5, just under 224 -> 3, tiny -> clamp 2, huge -> clamp 5; minus min_level
    assert levels.tolist() == [1, 2, 3, 1, 0, 3]
    assert levels.dtype == torch.int64


def test_assign_levels_uses_sqrt_area_of_rectangles():
    # 448 x 112 has sqrt(area) = 224 -> level 4
    boxes = Boxes(torch.tensor([[0.0, 0.0, 448.0, 112.0]]))
    assert assign_boxes_to_levels([boxes], 2, 5, 224, 4).tolist() == [2]


def test_convert_boxes_to_pooler_format():
    a = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    b = Boxes(torch.tensor([[9.0, 10.0, 11.0, 12.0]]))
    out = convert_boxes_to_pooler_format([a, Boxes(torch.zeros(0, 4)), b])
    expected = torch.tensor([[0.0, 1, 2, 3, 4], [0.0, 5, 6, 7, 8], [2.0, 9, 10, 11, 12]])
    torch.testing.assert_close(out, expected)


def _ramp_x(size=8):
    """(1, 1, size, size) map with value = column index x."""
    return torch.arange(size, dtype=torch.float32).repeat(size, 1)[None, None]


def test_roialignv2_on_x_ramp_shifts_by_half_pixel():
    # box [2, 6] -> aligned: [1.5, 5.5] in pixel-index space; bins [1.5, 3.5], [3.5, 5.5]; a linear map
    # averages to the bin centre: 2.5 and 4.5
    pooler = ROIAlignV2(2, [1.0], sampling_ratio=2)
    out = pooler([_ramp_x()], [Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]]))])
    torch.testing.assert_close(out, torch.tensor([[[[2.5, 4.5], [2.5, 4.5]]]]))


def test_roialign_v1_has_no_shift():
    pooler = ROIAlign(2, [1.0], sampling_ratio=2)
    out = pooler([_ramp_x()], [Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]]))])
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 5.0], [3.0, 5.0]]]]))


def test_roialignv2_scale_and_y_ramp_adaptive_sampling():
    # stride 2: box [4, 12] in image pixels is [2, 6] on the map; value = row index y
    pooler = ROIAlignV2(2, [0.5], sampling_ratio=0)
    out = pooler([_ramp_x().transpose(2, 3).contiguous()], [Boxes(torch.tensor([[4.0, 4.0, 12.0, 12.0]]))])
    torch.testing.assert_close(out, torch.tensor([[[[2.5, 2.5], [4.5, 4.5]]]]))


def test_roipool_takes_quantised_max():
    fmap = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :])[None, None]  # v = 10 y + x
    pooler = ROIPool(2, [1.0])
    # [0, 3] covers 4 pixels (inclusive end), split 2 + 2; coordinates are rounded first
    for box in ([0.0, 0.0, 3.0, 3.0], [0.4, 0.4, 2.6, 2.6]):
        out = pooler([fmap], [Boxes(torch.tensor([box]))])
        torch.testing.assert_close(out, torch.tensor([[[[11.0, 13.0], [31.0, 33.0]]]]))


def test_multilevel_routes_each_box_to_its_level_in_image_then_box_order():
    # image size 512: level L (stride 2^L) map is constant L for image 0 and L + 10 for image 1
    feats = []
    for level in range(2, 6):
        side = 512 // 2**level
        f = torch.empty(2, 3, side, side)
        f[0], f[1] = float(level), float(level + 10)
        feats.append(f)
    boxes = [
        Boxes(torch.tensor([_square(0, 0, 224), _square(10, 10, 50)])),  # levels 4, 2 (clamped)
        Boxes(torch.tensor([_square(100, 100, 112), _square(0, 0, 448)])),  # levels 3, 5
    ]
    pooler = ROIAlignV2(7, FPN_SCALES, sampling_ratio=0)
    out = pooler(feats, boxes)
    assert out.shape == (4, 3, 7, 7)
    expected = torch.tensor([4.0, 2.0, 13.0, 15.0])[:, None, None, None].expand(4, 3, 7, 7)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("levels", [1, 4])
def test_channels_last_features_give_the_same_values_in_channels_last(levels):
    torch.manual_seed(0)
    scales = FPN_SCALES[:levels]
    feats = [torch.randn(2, 8, 128 // 2**i, 128 // 2**i) for i in range(levels)]
    boxes = [Boxes(torch.tensor([_square(0, 0, 224), _square(10, 10, 50)])),
             Boxes(torch.tensor([_square(100, 100, 112)]))]
    pooler = ROIAlignV2(7, scales, sampling_ratio=0)
    nchw = pooler(feats, boxes)
    nhwc = pooler([f.contiguous(memory_format=torch.channels_last) for f in feats], boxes)
    assert torch.equal(nhwc, nchw)
    # the crops keep the features' layout: channels_last ones feed the mask head without a copy
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)


def test_multilevel_non_square_output_size():
    feats = [torch.ones(1, 2, 64 // 2**i, 64 // 2**i) for i in range(2)]
    pooler = ROIAlign((2, 3), (1 / 4, 1 / 8), sampling_ratio=2)
    out = pooler(feats, [Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 60.0, 60.0]]))])
    torch.testing.assert_close(out, torch.ones(2, 2, 2, 3))


@pytest.mark.parametrize("scales", [(1 / 4,), FPN_SCALES])
def test_zero_boxes(scales):
    feats = [torch.randn(2, 5, 16, 16, requires_grad=True) for _ in scales]
    pooler = ROIAlignV2(7, scales)
    out = pooler(feats, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert out.shape == (0, 5, 7, 7)
    assert out.requires_grad  # still part of the graph, so an empty batch does not break backward
    out = pooler([torch.zeros(0, 5, 16, 16) for _ in scales], [])
    assert out.shape == (0, 5, 7, 7)


def test_bad_scales_and_inputs():
    with pytest.raises(ConfigError, match="consecutive"):
        ROIAlignV2(7, (1 / 4, 1 / 16))
    with pytest.raises(ConfigError, match="power-of-2"):
        ROIAlignV2(7, (1 / 3,))
    pooler = ROIAlignV2(7, (1 / 4, 1 / 8))
    with pytest.raises(ValueError, match="2 levels"):
        pooler([torch.zeros(1, 1, 8, 8)], [Boxes(torch.zeros(0, 4))])
    with pytest.raises(ValueError, match="batch of 1"):
        pooler([torch.zeros(1, 1, 8, 8)] * 2, [Boxes(torch.zeros(0, 4))] * 2)


def test_registry_entries_and_knobs():
    p = ROI_POOLERS.build({"name": "ROIAlignV2", "sampling_ratio": 2}, output_size=7, scales=[0.25])
    assert isinstance(p, ROIAlignV2) and p.aligned and p.sampling_ratio == 2 and p.output_size == (7, 7)
    assert not ROI_POOLERS.build("ROIAlign", output_size=14, scales=[0.25]).aligned
    p = ROI_POOLERS.build("ROIPool", output_size=7, scales=FPN_SCALES)
    assert (p.min_level, p.max_level, p.canonical_box_size, p.canonical_level) == (2, 5, 224, 4)
    with pytest.raises(ConfigError, match="no knob 'sampling_ratio'"):
        ROI_POOLERS.build({"name": "ROIPool", "sampling_ratio": 2}, output_size=7, scales=[0.25])


@pytest.mark.parametrize("pooler_name", ["ROIAlignV2", "ROIPool"])
def test_bf16_features_are_pooled_at_float32_box_coordinates(pooler_name):
    """Under autocast the features are bf16 but the RoIs stay float32: bf16 would round a
    coordinate of 300.7 px to 300 (a multiple of 2 px there). The bf16 output equals pooling the
    same (bf16-valued) features in float32 at the exact boxes, rounded to bf16."""
    from framework.modeling.poolers import pooler_rois

    rois = pooler_rois([Boxes(torch.tensor([[300.7, 10.3, 340.9, 50.6]]))], torch.bfloat16)
    assert rois.dtype == torch.float32 and rois[0, 1].item() == pytest.approx(300.7)
    torch.manual_seed(0)
    pooler = ROI_POOLERS.build(pooler_name, output_size=7, scales=[0.25])
    feature = torch.randn(1, 8, 100, 100).bfloat16()
    boxes = [Boxes(torch.tensor([[300.7, 10.3, 340.9, 50.6]]))]
    out = pooler([feature], boxes)
    expected = pooler([feature.float()], boxes).bfloat16()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
