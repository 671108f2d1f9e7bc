"""Instances: length checks, field access, indexing every field type, cat, to."""

import copy

import numpy as np
import pytest
import torch

from framework.structures import BitMasks, Boxes, Instances, PolygonMasks


def _square(x):
    return [np.array([x, 0, x + 1, 0, x + 1, 1, x, 1], dtype=float)]


def make(n=3, offset=0):
    masks = torch.zeros(n, 4, 4, dtype=torch.bool)
    for i in range(n):
        masks[i, i % 4, i % 4] = True
    return Instances(
        (4, 6),
        boxes=Boxes(torch.arange(n * 4, dtype=torch.float32).view(n, 4) + offset),
        scores=torch.arange(n, dtype=torch.float32) + offset,
        bitmasks=BitMasks(masks),
        polys=PolygonMasks([_square(i + offset) for i in range(n)]),
        names=[f"obj{i + offset}" for i in range(n)],
    )


def test_fields_access():
    inst = Instances((4, 6), scores=torch.tensor([0.5, 0.7]))
    inst.classes = torch.tensor([1, 2])
    inst.set("ids", [10, 20])
    assert inst.image_size == (4, 6)
    assert len(inst) == 2
    assert inst.has("classes") and not inst.has("boxes")
    assert inst.get("ids") == [10, 20]
    assert list(inst.get_fields()) == ["scores", "classes", "ids"]
    inst.remove("ids")
    assert not inst.has("ids")
    with pytest.raises(KeyError, match="ids"):
        inst.remove("ids")
    with pytest.raises(AttributeError, match=r"'score'.*Did you mean 'scores'"):
        inst.score
    assert len(Instances((1, 1))) == 0


def test_length_mismatch_names_field_and_lengths():
    inst = Instances((4, 6), scores=torch.tensor([0.5, 0.7]))
    with pytest.raises(ValueError, match=r"'classes' has length 3.*hold 2"):
        inst.classes = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"'boxes' has length 1.*hold 2"):
        Instances((4, 6), scores=torch.zeros(2), boxes=Boxes([[0, 0, 1, 1]]))
    # replacing the only field with a new length is fine
    inst.scores = torch.zeros(5)
    assert len(inst) == 5


def test_image_size_is_not_a_field():
    inst = Instances((4, 6))
    with pytest.raises(ValueError, match="image_size"):
        inst.image_size = (1, 1)


def test_getitem_int_slice_mask_index():
    inst = make(3)
    one = inst[-1]
    assert len(one) == 1
    assert one.scores.tolist() == [2.0]
    assert one.boxes.tensor.tolist() == [[8, 9, 10, 11]]
    assert one.names == ["obj2"]
    assert one.polys.polygons[0][0][0] == 2.0
    assert one.bitmasks.tensor[0, 2, 2]

    sl = inst[1:]
    assert sl.scores.tolist() == [1.0, 2.0] and sl.names == ["obj1", "obj2"]

    mask = torch.tensor([True, False, True])
    m = inst[mask]
    assert m.scores.tolist() == [0.0, 2.0]
    assert m.names == ["obj0", "obj2"]
    assert [p[0][0] for p in m.polys.polygons] == [0.0, 2.0]
    assert m.bitmasks.tensor[:, 2, 2].tolist() == [False, True]

    idx = inst[torch.tensor([2, 0, 0])]
    assert idx.scores.tolist() == [2.0, 0.0, 0.0]
    assert idx.names == ["obj2", "obj0", "obj0"]
    assert idx.boxes.tensor[:, 0].tolist() == [8.0, 0.0, 0.0]
    assert idx.image_size == (4, 6)

    with pytest.raises(IndexError):
        inst[3]


def test_cat():
    a, b = make(2), make(1, offset=100)
    c = Instances.cat([a, b])
    assert len(c) == 3
    assert c.scores.tolist() == [0.0, 1.0, 100.0]
    assert c.boxes.tensor[:, 0].tolist() == [0.0, 4.0, 100.0]
    assert c.names == ["obj0", "obj1", "obj100"]
    assert [p[0][0] for p in c.polys.polygons] == [0.0, 1.0, 100.0]
    assert c.bitmasks.tensor.shape == (3, 4, 4)

    with pytest.raises(ValueError, match="image_size"):
        Instances.cat([a, Instances((5, 5), scores=torch.zeros(1))])
    with pytest.raises(ValueError, match="fields"):
        Instances.cat([Instances((4, 6), s=torch.zeros(1)), Instances((4, 6), t=torch.zeros(1))])


def test_to_and_repr_and_copy():
    inst = make(2)
    moved = inst.to(torch.float64)
    assert moved.scores.dtype == torch.float64
    assert moved.names == inst.names
    assert "num_instances=2" in repr(inst) and "image_height=4" in repr(inst)
    clone = copy.deepcopy(inst)
    clone.scores[0] = 9
    assert inst.scores[0] == 0
