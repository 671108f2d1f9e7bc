import math

import pytest
import torch

from framework.errors import ConfigError
from framework.layers.shape_spec import ShapeSpec
from framework.modeling.anchor_generator import DefaultAnchorGenerator, generate_cell_anchors
from framework.registry import ANCHOR_GENERATORS
from framework.structures.boxes import Boxes


def _features(*hw, batch=2, channels=3):
    return [torch.zeros(batch, channels, h, w) for h, w in hw]


def test_cell_anchors_ratios_half_one_two():
    # size 32: area 1024. ratio 0.5: w = sqrt(2048) = 45.2548, h = 22.6274; ratio 2: the transpose.
    a = generate_cell_anchors([32], [0.5, 1.0, 2.0])
    half_long, half_short = math.sqrt(2048) / 2, math.sqrt(512) / 2  # 22.6274, 11.3137
    expected = torch.tensor(
        [
            [-half_long, -half_short, half_long, half_short],
            [-16.0, -16.0, 16.0, 16.0],
            [-half_short, -half_long, half_short, half_long],
        ]
    )
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, expected)
    torch.testing.assert_close(a[0], torch.tensor([-22.627417, -11.313708, 22.627417, 11.313708]))


def test_cell_anchor_order_is_size_major():
    a = generate_cell_anchors([16, 32], [1.0, 2.0])
    widths = (a[:, 2] - a[:, 0]).tolist()
    # (16, r=1), (16, r=2), (32, r=1), (32, r=2)
    assert widths == pytest.approx([16.0, math.sqrt(128), 32.0, math.sqrt(512)], rel=1e-6)


def test_grid_stride4_offset0_order_y_then_x():
    gen = DefaultAnchorGenerator([ShapeSpec(stride=4)], sizes=[[32]], aspect_ratios=[[1.0]], offset=0.0)
    (anchors,) = gen(_features((2, 3)))
    assert isinstance(anchors, Boxes)
    expected = torch.tensor(
        [
            [-16.0, -16.0, 16.0, 16.0],  # y=0, x=0
            [-12.0, -16.0, 20.0, 16.0],  # y=0, x=4
            [-8.0, -16.0, 24.0, 16.0],  # y=0, x=8
            [-16.0, -12.0, 16.0, 20.0],  # y=4, x=0
            [-12.0, -12.0, 20.0, 20.0],
            [-8.0, -12.0, 24.0, 20.0],
        ]
    )
    torch.testing.assert_close(anchors.tensor, expected)


def test_grid_offset_half_shifts_by_half_stride():
    gen = DefaultAnchorGenerator([ShapeSpec(stride=4)], sizes=[[32]], aspect_ratios=[[1.0]], offset=0.5)
    (anchors,) = gen(_features((2, 3)))
    torch.testing.assert_close(anchors.tensor[0], torch.tensor([-14.0, -14.0, 18.0, 18.0]))
    torch.testing.assert_close(anchors.tensor[1], torch.tensor([-10.0, -14.0, 22.0, 18.0]))
    torch.testing.assert_close(anchors.tensor[3], torch.tensor([-14.0, -10.0, 18.0, 22.0]))


def test_anchor_index_is_innermost():
    gen = DefaultAnchorGenerator([ShapeSpec(stride=4)], sizes=[[32]], aspect_ratios=[[0.5, 1.0, 2.0]])
    (anchors,) = gen(_features((2, 3)))
    assert len(anchors) == 2 * 3 * 3
    cell = generate_cell_anchors([32], [0.5, 1.0, 2.0])
    torch.testing.assert_close(anchors.tensor[:3], cell)  # location (0, 0): the 3 cell anchors
    torch.testing.assert_close(anchors.tensor[3:6], cell + torch.tensor([4.0, 0.0, 4.0, 0.0]))  # (y=0, x=4)
    torch.testing.assert_close(anchors.tensor[9:12], cell + torch.tensor([0.0, 4.0, 0.0, 4.0]))  # (y=4, x=0)


def test_default_knobs_fpn_five_levels():
    strides = [4, 8, 16, 32, 64]
    gen = DefaultAnchorGenerator([ShapeSpec(channels=256, stride=s) for s in strides])
    assert gen.num_anchors == [3] * 5 and gen.num_cell_anchors == [3] * 5 and gen.box_dim == 4
    anchors = gen(_features((8, 8), (4, 4), (2, 2), (1, 1), (1, 1)))
    assert [len(a) for a in anchors] == [192, 48, 12, 3, 3]
    # level i uses size 32 * 2^i; the ratio-1 anchor at (0, 0) of the last level is 512 wide
    torch.testing.assert_close(anchors[4].tensor[1], torch.tensor([-256.0, -256.0, 256.0, 256.0]))


def test_flat_list_broadcasts_to_all_levels():
    gen = DefaultAnchorGenerator([ShapeSpec(stride=8), ShapeSpec(stride=16)], sizes=[32, 64], aspect_ratios=[1.0])
    assert gen.num_anchors == [2, 2]


def test_level_count_mismatch_is_a_clear_error():
    with pytest.raises(ConfigError, match="2 per-level entries.*3 feature levels"):
        DefaultAnchorGenerator([ShapeSpec(stride=s) for s in (4, 8, 16)], sizes=[[32], [64]])


def test_bad_offset_and_missing_stride():
    with pytest.raises(ConfigError, match="offset"):
        DefaultAnchorGenerator([ShapeSpec(stride=4)], offset=1.0)
    with pytest.raises(ConfigError, match="stride"):
        DefaultAnchorGenerator([ShapeSpec(channels=3)])


def test_cell_anchors_are_non_persistent_buffers():
    gen = DefaultAnchorGenerator([ShapeSpec(stride=4), ShapeSpec(stride=8)], sizes=[[32], [64]])
    assert gen.state_dict() == {}
    assert len(list(gen.buffers())) == 2  # still moved by .to(device)
    gen = gen.to(torch.float64)
    (a, _) = gen(_features((1, 1), (1, 1)))
    assert a.tensor.dtype == torch.float32  # Boxes are float32 regardless


def test_build_from_config_dict():
    # floats in nested lists: OmegaConf (2.3) rejects ints inside List[List[float]] on merge
    gen = ANCHOR_GENERATORS.build(
        {"name": "DefaultAnchorGenerator", "sizes": [[32.0]], "aspect_ratios": [[1.0]], "offset": 0.5},
        input_shape=[ShapeSpec(stride=4)],
    )
    (anchors,) = gen(_features((1, 1)))
    torch.testing.assert_close(anchors.tensor, torch.tensor([[-14.0, -14.0, 18.0, 18.0]]))
