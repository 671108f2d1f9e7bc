"""DatasetMapper, its built-in augmentations and detection_utils on tiny hand-made images with hand-computed geometry."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from framework.data.detection_utils import (
    image_size,
    ImageReadError,
    ImageSizeMismatchError,
    annotations_to_instances,
    check_image_size,
    filter_empty_instances,
    read_image,
)
from framework.data.augmentations import (
    AugSample,
    Augmentation,
    MixingAugmentation,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    ResizeShortestEdgeRange,
    resize,
    resize_shortest_edge_shape,
)
from framework.data.mapper import DatasetMapper
from framework.errors import ConfigError
from framework.structures import BitMasks, Boxes, Instances, PolygonMasks

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_image(path, height, width, left=RED, right=BLUE, mode="RGB", **save_kwargs):
    """A (height, width) image: left half ``left``, right half ``right`` (RGB)."""
    im = Image.new("RGB", (width, height), left)
    im.paste(right, (width // 2, 0, width, height))
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, **save_kwargs)
    return str(path)


def record(path, height, width, annotations=(), image_id=1):
    return {"file_name": str(path), "height": height, "width": width, "image_id": image_id,
            "annotations": list(annotations)}


def ann(bbox, segmentation=None, category_id=0, iscrowd=0, id=1):
    a = {"bbox": list(bbox), "category_id": category_id, "iscrowd": iscrowd, "id": id}
    if segmentation is not None:
        a["segmentation"] = segmentation
    return a


def resize_to(*lengths, max_size=1333):
    return {"name": "ResizeShortestEdge", "short_edge_length": list(lengths), "max_size": max_size}


#: A flip that always happens, to check its geometry.
FLIP = {"name": "RandomHorizontalFlip", "prob": 1.0}


def square_rle(height, width, y0, y1, x0, x1):
    m = np.zeros((height, width), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(m)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


# ---------------------------------------------------------------------- resize arithmetic
@pytest.mark.parametrize("h, w, short, max_size, expected", [
    (480, 640, 800, 1333, (800, 1067)),   # 640 * 800/480 = 1066.67 -> 1067
    (640, 480, 800, 1333, (1067, 800)),   # portrait: same, transposed
    (100, 1000, 800, 1333, (133, 1333)),  # 8000 > 1333: scale capped, 133.3 -> 133
    (30, 40, 50, 1333, (50, 67)),         # 66.67 -> 67
    (60, 80, 120, 1333, (120, 160)),      # exact factor 2
    (50, 50, 0, 1333, (50, 50)),          # 0: no resize
])
def test_resize_shortest_edge_shape(h, w, short, max_size, expected):
    assert resize_shortest_edge_shape(h, w, short, max_size) == expected


# ---------------------------------------------------------------------- read_image
def test_read_image_channel_order(tmp_path):
    path = write_image(tmp_path / "rb.png", 4, 6)
    rgb, bgr = read_image(path, "RGB"), read_image(path, "BGR")
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 4, 6)
    assert rgb[:, 0, 0].tolist() == [255, 0, 0] and rgb[:, 0, 5].tolist() == [0, 0, 255]
    assert bgr[:, 0, 0].tolist() == [0, 0, 255] and bgr[:, 0, 5].tolist() == [255, 0, 0]


def test_read_image_grayscale_and_rgba(tmp_path):
    Image.new("L", (3, 2), 100).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png", "RGB").tolist() == [[[100] * 3] * 2] * 3
    Image.new("RGBA", (3, 2), (10, 20, 30, 0)).save(tmp_path / "a.png")  # alpha is dropped
    img = read_image(tmp_path / "a.png", "BGR")
    assert img.shape == (3, 2, 3) and img[:, 1, 2].tolist() == [30, 20, 10]


def test_read_image_applies_exif_orientation(tmp_path):
    # Stored 40 wide x 20 high, left half red; orientation 6 = "rotate 90 deg clockwise to display":
    # displayed 20 wide x 40 high, with the stored left half on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write_image(tmp_path / "rot.jpg", 20, 40, exif=exif, quality=95)
    img = read_image(path, "RGB").int()
    assert img.shape == (3, 40, 20)
    assert (img[:, 5, 10] - torch.tensor([255, 0, 0])).abs().max() <= 8  # top: red (JPEG: +-few levels)
    assert (img[:, 35, 10] - torch.tensor([0, 0, 255])).abs().max() <= 8  # bottom: blue
    check_image_size({"file_name": path, "height": 40, "width": 20}, img)  # the displayed size is the truth
    assert image_size(path) == (20, 40)  # the same size, from the header only
    assert image_size(write_image(tmp_path / "plain.png", 20, 40)) == (40, 20)
    with pytest.raises(ImageReadError, match="nope.jpg.*not found"):
        image_size(tmp_path / "nope.jpg")


def test_read_image_corrupt_and_missing(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg") as info:
        read_image(bad, "BGR")
    assert isinstance(info.value, OSError)
    with pytest.raises(ImageReadError, match=r"nothere\.png.*not found"):
        read_image(tmp_path / "nothere.png", "BGR")
    truncated = tmp_path / "trunc.png"
    data = (tmp_path / "ok.png")
    write_image(data, 64, 64)
    truncated.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ImageReadError, match="trunc.png"):
        read_image(truncated, "RGB")


def test_check_image_size(tmp_path):
    img = torch.zeros(3, 4, 6, dtype=torch.uint8)
    with pytest.raises(ImageSizeMismatchError, match=r"x\.png.*4x6.*5x6"):
        check_image_size({"file_name": "x.png", "height": 5, "width": 6}, img)
    with pytest.raises(ImageSizeMismatchError, match="swapped"):
        check_image_size({"file_name": "x.png", "height": 6, "width": 4}, img)
    d = {"file_name": "x.png"}
    check_image_size(d, img)  # missing sizes are filled in
    assert (d["height"], d["width"]) == (4, 6)


# ---------------------------------------------------------------------- annotations_to_instances
def test_annotations_to_instances_mask_types():
    poly = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0]]
    rle = square_rle(8, 10, 2, 4, 3, 7)  # 2 x 4 = 8 pixels
    only_poly = [ann([1, 1, 5, 4], poly, 2), ann([3, 2, 7, 4], poly, 1, id=2)]

    inst = annotations_to_instances(only_poly, (8, 10))
    assert isinstance(inst.gt_masks, PolygonMasks)
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [2, 1]
    assert inst.gt_boxes.tensor.tolist() == [[1, 1, 5, 4], [3, 2, 7, 4]]

    bit = annotations_to_instances(only_poly, (8, 10), mask_format="bitmask")
    assert isinstance(bit.gt_masks, BitMasks) and bit.gt_masks.tensor.shape == (2, 8, 10)

    mixed = annotations_to_instances([ann([1, 1, 5, 4], poly), ann([3, 2, 7, 4], rle, id=2)], (8, 10))
    assert isinstance(mixed.gt_masks, BitMasks)
    assert mixed.gt_masks.tensor[1].nonzero().tolist() == [[y, x] for y in (2, 3) for x in (3, 4, 5, 6)]

    no_masks = annotations_to_instances([ann([0, 0, 20, 3])], (8, 10))
    assert not no_masks.has("gt_masks")
    assert no_masks.gt_boxes.tensor.tolist() == [[0, 0, 10, 3]]  # clipped to the 10-wide image
    assert len(annotations_to_instances([], (8, 10))) == 0


def test_filter_empty_instances():
    inst = Instances((10, 10), gt_boxes=Boxes(torch.tensor([[0, 0, 1e-6, 5], [0, 0, 2, 2], [3, 3, 5, 3]])),
                     gt_classes=torch.tensor([0, 1, 2]))
    assert filter_empty_instances(inst).gt_classes.tolist() == [1]


# ---------------------------------------------------------------------- the mapper
def test_test_mode_output(tmp_path):
    path = write_image(tmp_path / "a.png", 60, 80)
    d = record(path, 60, 80, [ann([10, 10, 30, 20], [[10, 10, 30, 10, 30, 20]])], image_id=7)
    before = copy.deepcopy(d)
    out = DatasetMapper(is_train=False, augmentations=[resize_to(120)])(d)
    assert set(out) == {"file_name", "height", "width", "image_id", "image"}
    assert (out["height"], out["width"], out["image_id"]) == (60, 80, 7)  # the ORIGINAL size
    assert out["image"].shape == (3, 120, 160) and out["image"].dtype == torch.uint8
    assert d == before  # the input dict is not modified


def test_train_boxes_and_polygons_scaled_and_flipped(tmp_path):
    path = write_image(tmp_path / "a.png", 60, 80)  # h=60, w=80 -> 120 x 160 (factor 2)
    poly = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0]]
    d = record(path, 60, 80, [ann([10, 10, 30, 20], poly, category_id=3)])
    before = copy.deepcopy(d)

    out = DatasetMapper(is_train=True, augmentations=[resize_to(120)], image_format="RGB")(d)
    assert "annotations" not in out and out["image"].shape == (3, 120, 160)
    inst = out["instances"]
    assert inst.image_size == (120, 160)
    assert inst.gt_boxes.tensor.tolist() == [[20, 20, 60, 40]]
    assert inst.gt_classes.tolist() == [3]
    assert inst.gt_masks.polygons[0][0].tolist() == [20, 20, 60, 20, 60, 40]

    out = DatasetMapper(is_train=True, augmentations=[resize_to(120), FLIP], image_format="RGB")(d)
    inst = out["instances"]  # flipped after the resize: x -> 160 - x
    assert inst.gt_boxes.tensor.tolist() == [[100, 20, 140, 40]]
    assert inst.gt_masks.polygons[0][0].tolist() == [140, 20, 100, 20, 100, 40]
    # The image is mirrored too: blue (right half) is now on the left.
    assert out["image"][:, 60, 10].tolist() == [0, 0, 255] and out["image"][:, 60, 150].tolist() == [255, 0, 0]
    # Flipped first, then resized: the same result (the flip commutes with a scale).
    flipped_first = DatasetMapper(is_train=True, augmentations=[FLIP, resize_to(120)], image_format="RGB")(d)
    assert flipped_first["instances"].gt_boxes.tensor.tolist() == [[100, 20, 140, 40]]
    assert d == before


def test_train_boxes_non_integer_scale(tmp_path):
    path = write_image(tmp_path / "a.png", 30, 40)  # -> 50 x 67: x * 67/40 = 1.675, y * 50/30
    d = record(path, 30, 40, [ann([4, 3, 40, 30], [[4, 3, 40, 3, 40, 30]])])
    out = DatasetMapper(is_train=True, augmentations=[resize_to(50)])(d)
    assert out["image"].shape == (3, 50, 67)
    torch.testing.assert_close(out["instances"].gt_boxes.tensor, torch.tensor([[6.7, 5.0, 67.0, 50.0]]))
    np.testing.assert_allclose(out["instances"].gt_masks.polygons[0][0], [6.7, 5, 67, 5, 67, 50], rtol=1e-12)


def test_rle_mask_resized_with_image(tmp_path):
    # 40 x 60 image, a 10 x 10 RLE square at rows 10..19, cols 20..29 (plus a polygon: mixed -> BitMasks).
    path = write_image(tmp_path / "a.png", 40, 60)
    d = record(path, 40, 60, [ann([20, 10, 30, 20], square_rle(40, 60, 10, 20, 20, 30)),
                              ann([0, 0, 4, 4], [[0, 0, 4, 0, 4, 4, 0, 4]], id=2)])
    inst = DatasetMapper(is_train=True, augmentations=[resize_to(60)])(d)["instances"]  # factor 1.5 -> 60 x 90
    masks = inst.gt_masks
    assert isinstance(masks, BitMasks) and masks.tensor.shape == (2, 60, 90)
    # Nearest sampling at pixel centres: output pixel y reads input floor((y + 0.5) / 1.5), so input
    # rows 10..19 become rows 15..29 and cols 20..29 become cols 30..44: a 15 x 15 square (area x 2.25).
    ys, xs = masks.tensor[0].nonzero(as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 29, 30, 44) and len(ys) == 225
    assert inst.gt_boxes.tensor[0].tolist() == [30, 15, 45, 30]

    inst = DatasetMapper(is_train=True, augmentations=[resize_to(60), FLIP])(d)["instances"]
    ys, xs = inst.gt_masks.tensor[0].nonzero(as_tuple=True)  # x -> 90 - x: cols 30..44 -> 45..59
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 29, 45, 59) and len(ys) == 225
    assert inst.gt_boxes.tensor[0].tolist() == [45, 15, 60, 30]


def test_crowd_dropped_in_training_and_mask_on(tmp_path):
    path = write_image(tmp_path / "a.png", 20, 20)
    poly = [[1, 1, 8, 1, 8, 8]]
    d = record(path, 20, 20, [ann([1, 1, 8, 8], poly, category_id=0),
                              ann([0, 0, 20, 20], square_rle(20, 20, 0, 20, 0, 20), category_id=1, iscrowd=1, id=2)])
    same = [resize_to(20)]
    inst = DatasetMapper(is_train=True, augmentations=same)(d)["instances"]
    assert inst.gt_classes.tolist() == [0]
    assert isinstance(inst.gt_masks, PolygonMasks)  # the crowd RLE is gone before choosing the mask type
    no_mask = DatasetMapper(is_train=True, augmentations=same, mask_on=False)(d)["instances"]
    assert not no_mask.has("gt_masks") and no_mask.gt_classes.tolist() == [0]
    with pytest.raises(ValueError, match="mask_on=False"):
        DatasetMapper(is_train=True, augmentations=same)(record(path, 20, 20, [ann([1, 1, 8, 8])]))


def test_instances_emptied_by_resize_are_dropped():
    inst = Instances((100, 100), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 10.00001, 50.0], [0.0, 0.0, 50.0, 50.0]])),
                     gt_classes=torch.tensor([0, 1]))
    sample = resize(AugSample.from_instances(torch.zeros(3, 100, 100, dtype=torch.uint8), inst), (10, 10))
    out = filter_empty_instances(sample.to_instances())  # x 0.1: width 1e-6
    assert out.gt_classes.tolist() == [1] and out.gt_boxes.tensor.tolist() == [[0, 0, 5, 5]]


def test_an_augmentation_that_removes_every_object_leaves_an_empty_image(tmp_path):
    class DropAll(Augmentation):
        def __call__(self, sample):
            return sample.select(torch.zeros(len(sample), dtype=torch.bool))

    path = write_image(tmp_path / "a.png", 20, 20)
    d = record(path, 20, 20, [ann([1, 1, 8, 8], [[1, 1, 8, 1, 8, 8]])])
    out = DatasetMapper(is_train=True, augmentations=[DropAll(), resize_to(40)])(d)
    inst = out["instances"]
    assert len(inst) == 0 and inst.image_size == (40, 40) and isinstance(inst.gt_masks, PolygonMasks)
    assert out["image"].shape == (3, 40, 40)


@pytest.mark.parametrize("h, w, short, expected_hw", [(30, 40, 50, (50, 67)), (90, 60, 40, (60, 40))])
def test_image_resize_is_pils_bilinear(tmp_path, h, w, short, expected_hw):
    # detectron2 resizes with PIL's bilinear filter: the pixels must be identical, up- and downscaling.
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    mapper = DatasetMapper(is_train=False, augmentations=[resize_to(short)], image_format="RGB")
    out = mapper(record(tmp_path / "noise.png", h, w))
    expected = np.asarray(Image.fromarray(pixels).resize(expected_hw[::-1], Image.BILINEAR))
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), expected)


def test_image_format_in_mapper(tmp_path):
    path = write_image(tmp_path / "a.png", 8, 8, left=RED, right=RED)
    for fmt, expected in (("BGR", [0, 0, 255]), ("RGB", [255, 0, 0])):
        img = DatasetMapper(is_train=False, augmentations=[], image_format=fmt)(record(path, 8, 8))["image"]
        assert img[:, 4, 4].tolist() == expected and img.shape == (3, 8, 8)  # no augmentation: as read


def test_mapper_errors_name_the_file(tmp_path):
    path = write_image(tmp_path / "small.png", 10, 12)
    with pytest.raises(ImageSizeMismatchError, match="small.png"):
        DatasetMapper(is_train=False, augmentations=[resize_to(10)])(record(path, 11, 12))
    with pytest.raises(ImageReadError, match="gone.png"):
        DatasetMapper(is_train=True, augmentations=[])(record(tmp_path / "gone.png", 10, 12))


def test_sampled_sizes_and_flips():
    torch.manual_seed(0)
    assert {ResizeShortestEdgeRange(short_edge_length=(10, 12)).sample_short_edge() for _ in range(60)} == {10, 11, 12}
    assert {ResizeShortestEdge(short_edge_length=(10, 20, 30)).sample_short_edge() for _ in range(60)} == {10, 20, 30}
    # One draw of torch.rand per image, flipped below prob: with prob 0.5 about half of 200.
    sample = AugSample.from_instances(torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3))
    flips = [not torch.equal(RandomHorizontalFlip()(sample).image, sample.image) for _ in range(200)]
    assert 60 < sum(flips) < 140
    assert not any(not torch.equal(RandomHorizontalFlip(prob=0.0)(sample).image, sample.image) for _ in range(20))


def test_config_errors():
    with pytest.raises(ConfigError, match=r"\[low, high\]"):
        DatasetMapper(is_train=True, augmentations=[{"name": "ResizeShortestEdgeRange", "short_edge_length": [6, 7, 8]}])
    with pytest.raises(ConfigError, match="Did you mean 'RandomHorizontalFlip'"):
        DatasetMapper(is_train=True, augmentations=["RandomHorizontalFlp"])
    with pytest.raises(ConfigError, match=r"augmentations\.0\.probability.*Did you mean 'prob'"):
        DatasetMapper(is_train=True, augmentations=[{"name": "RandomHorizontalFlip", "probability": 0.2}])
    with pytest.raises(ConfigError, match="non-negative ints"):
        ResizeShortestEdge(short_edge_length=[])
    with pytest.raises(ConfigError, match=r"prob must be in \[0, 1\]"):
        RandomHorizontalFlip(prob=1.5)
    with pytest.raises(ConfigError, match="image_format"):
        DatasetMapper(is_train=True, augmentations=[], image_format="rgb")

    class Mix(MixingAugmentation):
        def __call__(self, sample, others):
            return sample

    with pytest.raises(ConfigError, match=r"is_train=False.*Mix.*only training"):
        DatasetMapper(is_train=False, augmentations=[Mix()])
