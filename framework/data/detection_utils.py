"""Helpers that turn one dataset dict into model inputs: read the image, build the gt ``Instances``.

Semantics follow detectron2's ``data/detection_utils.py``: images are decoded with PIL after
applying their EXIF orientation, gt boxes are clipped to the image, and instances whose box became
(almost) empty after the transforms are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

from framework.structures import BitMasks, Boxes, Instances, PolygonMasks, polygons_to_bitmask

__all__ = [
    "ImageReadError",
    "ImageSizeMismatchError",
    "read_image",
    "image_size",
    "check_image_size",
    "annotations_to_instances",
    "filter_empty_instances",
]

IMAGE_FORMATS = ("BGR", "RGB")
MASK_FORMATS = ("polygon", "bitmask")


class ImageReadError(OSError, ValueError):
    """An image file is missing, unreadable or corrupt. The message names the file and the reason.

    Takes a single message argument, so that a DataLoader worker can re-raise it in the main process.
    """


class ImageSizeMismatchError(ValueError):
    """The decoded image size differs from the ``height``/``width`` recorded in its dataset dict."""


def read_image(file_name: str | os.PathLike, format: Literal["BGR", "RGB"] = "BGR") -> torch.Tensor:
    """Decode an image file with PIL, applying its EXIF orientation.

    Grayscale, palette, RGBA (alpha dropped), CMYK... images are converted to 3 channels; 16-bit
    grayscale ones are scaled to 8 bits (value // 256).

    Args:
        file_name: path of the image.
        format: channel order of the result.

    Returns:
        (3, H, W) uint8 tensor in ``format`` order, H x W being the size *after* the EXIF
        rotation (what a viewer shows, and what COCO's height/width describe).

    Raises:
        ImageReadError: the file is missing, not an image, truncated or otherwise undecodable.
    """
    if format not in IMAGE_FORMATS:
        raise ValueError(f"read_image: format must be one of {list(IMAGE_FORMATS)}, got {format!r}")
    try:
        with Image.open(file_name) as im:
            # exif_transpose and convert both force a full decode, so a truncated file fails here.
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I"):
                # 16-bit (and 32-bit integer) grayscale: PIL's convert() clips at 255, which would make
                # almost every pixel white; keep the top 8 of 16 bits instead.
                levels = np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8
                im = Image.fromarray(levels.astype(np.uint8))  # 2-D uint8: mode "L"
            rgb = im.convert("RGB")
    except FileNotFoundError as e:
        raise ImageReadError(f"cannot read image {file_name}: file not found") from e
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError...)
        raise ImageReadError(f"cannot read image {file_name}: {type(e).__name__}: {e}") from e
    image = F.pil_to_tensor(rgb)  # (3, H, W) uint8, RGB
    if format == "BGR":
        image = image.flip(0)
    return image.contiguous()


#: EXIF orientations (tag 274) that rotate by 90 or 270 degrees, swapping width and height.
_EXIF_TRANSPOSED = (5, 6, 7, 8)


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an open PIL image once its EXIF rotation is applied (read from the header)."""
    width, height = im.size
    if im.getexif().get(274) in _EXIF_TRANSPOSED:
        width, height = height, width
    return int(width), int(height)


def image_size(file_name: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image as :func:`read_image` returns it (EXIF rotation applied), read
    from the file's header without decoding the pixels.

    Raises:
        ImageReadError: the file is missing or not an image.
    """
    try:
        with Image.open(file_name) as im:
            return displayed_size(im)
    except FileNotFoundError as e:
        raise ImageReadError(f"cannot read image {file_name}: file not found") from e
    except Exception as e:
        raise ImageReadError(f"cannot read image {file_name}: {type(e).__name__}: {e}") from e


def check_image_size(dataset_dict: dict[str, Any], image: torch.Tensor) -> None:
    """Check that ``image`` (C, H, W) has the size recorded in ``dataset_dict``.

    A dict without ``height``/``width`` gets them filled in from the image (as detectron2 does).

    Raises:
        ImageSizeMismatchError: naming the file, both sizes, and the usual causes.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if expected[0] is not None and expected[1] is not None and (int(expected[0]), int(expected[1])) != (h, w):
        swapped = " (height and width are swapped: check the EXIF orientation of the file)" if expected == (w, h) else ""
        raise ImageSizeMismatchError(
            f"image {dataset_dict.get('file_name', '<no file_name>')} (image_id={dataset_dict.get('image_id')}) "
            f"decodes to height x width = {h}x{w}, but its dataset dict says {expected[0]}x{expected[1]}{swapped}. "
            "Fix the annotation file or the image; the boxes would not match the pixels."
        )
    dataset_dict.setdefault("height", h)
    dataset_dict.setdefault("width", w)


def _segmentation_to_bitmask(segm: Any, height: int, width: int, where: str) -> np.ndarray:
    """(height, width) bool mask of one annotation's segmentation: polygons, RLE dict or 2-d array."""
    if isinstance(segm, (list, tuple)):
        return polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], height, width)
    if isinstance(segm, Mapping):
        size = list(segm.get("size", []))
        if size != [height, width]:
            raise ValueError(f"{where}: RLE size {size} differs from the image size [h, w] = {[height, width]}")
        rle = dict(segm)
        if isinstance(rle.get("counts"), list):  # uncompressed RLE (COCO crowd annotations)
            rle = mask_util.frPyObjects(rle, height, width)
        return mask_util.decode(rle).astype(bool)
    if isinstance(segm, (np.ndarray, torch.Tensor)):
        mask = np.asarray(segm.cpu() if isinstance(segm, torch.Tensor) else segm)
        if mask.shape != (height, width):
            raise ValueError(f"{where}: mask of shape {mask.shape} differs from the image size {(height, width)}")
        return mask.astype(bool)
    raise ValueError(f"{where}: 'segmentation' must be a list of polygons, an RLE dict or an (H, W) array, "
                     f"got {type(segm).__name__}")


def annotations_to_instances(
    annos: Sequence[Mapping[str, Any]],
    image_size: tuple[int, int],
    mask_format: Literal["polygon", "bitmask"] = "polygon",
) -> Instances:
    """Ground truth of one image as ``Instances``, in the coordinates of ``image_size``.

    Args:
        annos: annotations of the image, each with ``bbox`` (XYXY absolute), ``category_id``
            (contiguous) and optionally ``segmentation`` (polygons: list of flat [x0, y0, ...]
            lists; or an RLE dict; or an (H, W) array). Crowd annotations are NOT filtered here.
        image_size: (height, width) the boxes and masks live in.
        mask_format: ``"polygon"`` keeps polygon segmentations as :class:`PolygonMasks`; an image
            whose annotations include any RLE / array mask gets :class:`BitMasks` for all of them
            (a mask field has one type). ``"bitmask"`` rasterises everything to :class:`BitMasks`.

    Returns:
        Instances with ``gt_boxes`` (Boxes (N, 4), clipped to the image), ``gt_classes`` ((N,)
        int64) and, when the annotations have ``segmentation``, ``gt_masks`` (PolygonMasks, or
        BitMasks (N, H, W)). No annotations: N = 0 and no ``gt_masks`` (as detectron2).
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {list(MASK_FORMATS)}, got {mask_format!r}")
    height, width = int(image_size[0]), int(image_size[1])
    boxes = Boxes(torch.tensor([list(map(float, a["bbox"])) for a in annos], dtype=torch.float32).reshape(-1, 4))
    boxes.clip((height, width))
    classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)
    target = Instances((height, width), gt_boxes=boxes, gt_classes=classes)

    with_segm = ["segmentation" in a for a in annos]
    if not any(with_segm):
        return target
    if not all(with_segm):
        ids = [a.get("id") for a, s in zip(annos, with_segm) if not s]
        raise ValueError(f"annotations with ids {ids} have no 'segmentation' while others of the same image do; "
                         "either every annotation of an image has a mask or none has")
    segms = [a["segmentation"] for a in annos]
    all_polygons = all(isinstance(s, (list, tuple)) for s in segms)
    if mask_format == "polygon" and all_polygons:
        target.gt_masks = PolygonMasks([[np.asarray(p, dtype=np.float64) for p in s] for s in segms])
    else:
        masks = [_segmentation_to_bitmask(s, height, width, f"annotation id={a.get('id')}") for a, s in zip(annos, segms)]
        target.gt_masks = BitMasks(torch.from_numpy(np.stack(masks)))
    return target


def filter_empty_instances(
    instances: Instances, *, by_box: bool = True, by_mask: bool = True, box_threshold: float = 1e-5
) -> Instances:
    """Drop instances whose gt box has a side <= ``box_threshold`` or whose gt mask is empty.

    Transforms (resize, crop...) can squash a thin box to nothing; such targets only add noise.

    Returns:
        the kept instances (a new Instances; all of them when nothing is empty).
    """
    if not by_box and not by_mask:
        return instances
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box and instances.has("gt_boxes"):
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold).cpu()
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty().cpu()
    return instances[keep]
