"""BitMasks / PolygonMasks: crop_and_resize targets, boxes, areas, indexing, on hand-computed inputs."""

import numpy as np
import pytest
import torch

from framework.structures import BitMasks, Boxes, PolygonMasks, polygons_to_bitmask

SQUARE = [2, 2, 6, 2, 6, 6, 2, 6]  # covers pixels 2..5 in x and y
LEFT_HALF = [2, 2, 4, 2, 4, 6, 2, 6]  # pixels x in 2..3, y in 2..5


def _bitmasks():
    m = torch.zeros(3, 10, 10, dtype=torch.bool)
    m[0, 2:6, 2:6] = True
    m[1, 2:6, 2:4] = True
    return BitMasks(m)  # instance 2 is empty


# -- BitMasks ---------------------------------------------------------------------------------
def test_bitmasks_crop_box_equal_to_mask_is_all_ones_and_half_is_half():
    bm = _bitmasks()[:2]
    boxes = torch.tensor([[2.0, 2, 6, 6], [2.0, 2, 6, 6]])
    out = bm.crop_and_resize(boxes, 4)
    assert out.dtype == torch.float32 and out.shape == (2, 4, 4)
    assert (out[0] == 1).all()
    # aligned RoIAlign samples pixel centres 2, 3, 4, 5: the left two columns are inside
    assert out[1].tolist() == [[1, 1, 0, 0]] * 4
    # M = 2: each bin averages 2 x 2 pixels
    assert bm.crop_and_resize(boxes, 2)[1].tolist() == [[1, 0], [1, 0]]
    # M = 1: the single bin averages to exactly 0.5, which counts as foreground (>= 0.5)
    assert bm.crop_and_resize(boxes, 1)[1].tolist() == [[1.0]]


def test_bitmasks_crop_larger_box():
    bm = _bitmasks()[:1]
    out = bm.crop_and_resize(torch.tensor([[0.0, 0, 8, 8]]), 4)
    # bins cover pixels {0,1}, {2,3}, {4,5}, {6,7}; the mask is 2..5
    assert out[0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_bitmasks_boxes_area_nonempty():
    bm = _bitmasks()
    assert bm.get_bounding_boxes().tensor.tolist() == [[2, 2, 6, 6], [2, 2, 4, 6], [0, 0, 0, 0]]
    assert bm.area().tolist() == [16, 8, 0]
    assert bm.nonempty().tolist() == [True, True, False]


def test_bitmasks_container():
    bm = _bitmasks()
    assert len(bm) == 3 and bm.image_size == (10, 10)
    assert bm[1].tensor.shape == (1, 10, 10) and bm[1].tensor.sum() == 8
    assert bm[torch.tensor([False, True, True])].area().tolist() == [8, 0]
    assert bm[torch.tensor([1, 0])].area().tolist() == [8, 16]
    assert BitMasks.cat([bm[:1], bm[2:]]).area().tolist() == [16, 0]
    assert bm.to("cpu").device.type == "cpu"
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        BitMasks(torch.zeros(10, 10))
    with pytest.raises(ValueError, match="3 boxes for 2 masks"):
        bm[:2].crop_and_resize(torch.zeros(3, 4), 4)


def test_bitmasks_from_polygons():
    bm = BitMasks.from_polygon_masks(PolygonMasks([[SQUARE], [LEFT_HALF]]), 10, 10)
    assert torch.equal(bm.tensor, _bitmasks().tensor[:2])
    assert BitMasks.from_polygon_masks([], 5, 7).tensor.shape == (0, 5, 7)


# -- polygons ---------------------------------------------------------------------------------
def test_polygons_to_bitmask():
    m = polygons_to_bitmask([np.array(SQUARE, dtype=float)], 10, 10)
    assert m.dtype == bool and m.sum() == 16 and m[2:6, 2:6].all()
    assert not polygons_to_bitmask([], 3, 4).any()


def test_polygon_crop_exact_box_and_half():
    pm = PolygonMasks([[SQUARE], [LEFT_HALF]])
    out = pm.crop_and_resize(torch.tensor([[2.0, 2, 6, 6], [2.0, 2, 6, 6]]), 4)
    assert out.dtype == torch.float32 and out.shape == (2, 4, 4)
    assert (out[0] == 1).all()
    assert out[1].tolist() == [[1, 1, 0, 0]] * 4
    # the stored polygons are not shifted in place
    assert pm.polygons[0][0].tolist() == SQUARE
    assert pm[:0].crop_and_resize(torch.zeros(0, 4), 7).shape == (0, 7, 7)


def test_polygon_and_bitmask_crops_agree_on_rectangle():
    # a 4 x 4 rectangle and a 2 x 4 one; boxes: exact fit, twice as large, shifted
    pm = PolygonMasks([[SQUARE], [LEFT_HALF], [SQUARE]])
    bm = BitMasks.from_polygon_masks(pm, 10, 10)
    boxes = torch.tensor([[0.0, 0, 8, 8], [2.0, 2, 6, 6], [4.0, 4, 8, 8]])
    from_poly = pm.crop_and_resize(boxes, 4)
    from_bits = bm.crop_and_resize(boxes, 4)
    assert torch.equal(from_poly, from_bits)
    # the shifted box only sees the square's bottom-right 2 x 2 pixels (4..5)
    assert from_poly[2].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_polygon_area_and_boxes():
    triangle = [0, 0, 4, 0, 0, 3]  # area 4 * 3 / 2 = 6
    rect = [0, 0, 2, 0, 2, 3, 0, 3]  # area 6
    pm = PolygonMasks([[triangle], [triangle, rect], [[1, 2, 5, 2, 5, 4], [0, 3, 2, 3, 2, 9]], []])
    assert pm.area().tolist() == [6.0, 12.0, 4.0 + 6.0, 0.0]
    assert pm.get_bounding_boxes().tensor.tolist() == [[0, 0, 4, 3], [0, 0, 4, 3], [0, 2, 5, 9], [0, 0, 0, 0]]
    assert pm.nonempty().tolist() == [True, True, True, False]


def test_polygon_validation_names_instance():
    with pytest.raises(ValueError, match="instance 1"):
        PolygonMasks([[SQUARE], [[0, 0, 1, 1]]])  # only 2 points
    with pytest.raises(ValueError, match="instance 0"):
        PolygonMasks([[[0, 0, 1, 1, 2]]])  # odd number of coordinates
    with pytest.raises(ValueError, match="instance 0 must be a list"):
        PolygonMasks([np.array(SQUARE)])


def test_polygon_indexing_and_cat():
    pm = PolygonMasks([[[x, 0, x + 1, 0, x + 1, 1]] for x in range(4)])

    def firsts(p):
        return [inst[0][0] for inst in p.polygons]

    assert firsts(pm[2]) == [2.0]
    assert firsts(pm[-1]) == [3.0]
    assert firsts(pm[1:3]) == [1.0, 2.0]
    assert firsts(pm[torch.tensor([True, False, False, True])]) == [0.0, 3.0]
    assert firsts(pm[[3, 0]]) == [3.0, 0.0]
    assert firsts(pm[torch.tensor([1, 1])]) == [1.0, 1.0]
    assert firsts(PolygonMasks.cat([pm[:1], pm[3:]])) == [0.0, 3.0]
    assert pm.to("cpu") is pm
    with pytest.raises(IndexError):
        pm[4]
    with pytest.raises(IndexError):
        pm[torch.tensor([True, False])]


def test_polygon_scale_and_flip_do_not_touch_input():
    raw = np.array(SQUARE, dtype=float)
    pm = PolygonMasks([[raw]])
    pm.scale(2.0, 0.5)
    assert pm.polygons[0][0].tolist() == [4, 1, 12, 1, 12, 3, 4, 3]
    pm.flip_horizontal(20)
    assert pm.polygons[0][0].tolist() == [16, 1, 8, 1, 8, 3, 16, 3]
    assert raw.tolist() == SQUARE
    assert isinstance(pm.get_bounding_boxes(), Boxes)


def test_bitmasks_indexing_is_a_view_that_crops_like_the_copy():
    """Proposals indexed out of a few gt masks: the view crops exactly as the gathered copy would,
    without one full-size copy per proposal."""
    g = torch.Generator().manual_seed(0)
    gt = BitMasks(torch.rand(3, 40, 50, generator=g) > 0.5)
    matched = torch.tensor([2, 0, 0, 1, 2, 2, 1])
    view = gt[matched]
    assert view._tensor is None and len(view) == 7  # nothing gathered yet
    boxes = torch.tensor([[0, 0, 50, 40], [3, 4, 20, 30], [10, 10, 11, 12], [0, 0, 5, 5],
                          [20, 5, 49, 39], [1.5, 2.5, 30.2, 17.7], [5, 5, 45, 35]], dtype=torch.float32)
    copied = BitMasks(gt.tensor[matched].clone())
    assert torch.equal(view.crop_and_resize(boxes, 28), copied.crop_and_resize(boxes, 28))
    # a view of a view, bool masks, slices and ints index the original masks
    sub = view[torch.tensor([True, False, True, False, False, False, True])][1:]
    assert torch.equal(sub.tensor, gt.tensor[[0, 1]])
    assert torch.equal(sub.crop_and_resize(boxes[:2], 14), BitMasks(gt.tensor[[0, 1]]).crop_and_resize(boxes[:2], 14))
    assert torch.equal(view[-1].tensor, gt.tensor[[1]]) and len(view[[]]) == 0
    assert torch.equal(sub.to("cpu").tensor, sub.tensor) and torch.equal(sub.area(), gt.tensor[[0, 1]].sum(dim=(1, 2)))
    with pytest.raises(IndexError):
        view[7]
