"""Load a COCO instances json into detectron2-style dataset dicts, validating it on the way.

A dataset dict describes one image::

    {"file_name": "/abs/path/img.jpg", "height": 480, "width": 640, "image_id": 42,
     "annotations": [{"bbox": [x0, y0, x1, y1],       # XYXY absolute float, clipped to the image
                      "category_id": 0,               # contiguous id in [0, K)
                      "segmentation": [[x, y, ...]] or {"size": [h, w], "counts": "..."},
                      "iscrowd": 0, "id": 7, "area": 123.0}, ...]}

Problems in the json are collected and reported together in one :class:`DatasetError`, so that a
user can fix all of them at once. Problems that only lose one annotation (a degenerate box, a
broken polygon) are dropped with a ``logging`` warning instead, unless ``strict=True``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_util

from framework.errors import InputError

__all__ = ["DatasetError", "load_coco_json", "read_coco_categories", "check_images"]

logger = logging.getLogger(__name__)

#: How many problems an error message lists before summarising the rest as a count.
MAX_LISTED_PROBLEMS = 20


class DatasetError(InputError, ValueError):
    """A dataset file is missing or invalid. ``problems`` lists every problem found (one line each)."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


def _format_problems(header: str, problems: list[str]) -> str:
    lines = [f"{header}: {len(problems)} problem(s) found:"]
    lines += [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)


def _read_json(json_file: Path) -> Any:
    if not json_file.is_file():
        raise DatasetError(f"COCO json file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_file} is not valid JSON: {e}") from e


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _category_mapping(categories: Any, where: str) -> tuple[list[str], dict[int, int]]:
    """Sorted dataset category ids -> contiguous ids 0..K-1, and class names in that order."""
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{where}: 'categories' must be a non-empty list of {{'id', 'name'}} objects")
    problems = []
    names: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, Mapping) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            problems.append(f"categories[{i}] = {cat!r} needs an integer 'id' and a string 'name'")
        elif cat["id"] in names:
            problems.append(f"duplicate category id {cat['id']} ({names[cat['id']]!r} and {cat['name']!r})")
        else:
            names[cat["id"]] = cat["name"]
    if problems:
        raise DatasetError(_format_problems(where, problems), problems)
    ids = sorted(names)
    return [names[i] for i in ids], {dataset_id: contiguous for contiguous, dataset_id in enumerate(ids)}


@functools.lru_cache(maxsize=16)
def _read_categories_cached(json_file: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    raw = _read_json(Path(json_file))
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{json_file}: the top level must be a JSON object with 'images', 'annotations', 'categories'")
    classes, id_map = _category_mapping(raw.get("categories"), json_file)
    return tuple(classes), tuple(id_map.items())


def read_coco_categories(json_file: str | os.PathLike) -> dict[str, Any]:
    """Read only the class metadata of a COCO json (cached per file version).

    Returns ``{"thing_classes": [...], "thing_dataset_id_to_contiguous_id": {...}}`` with classes
    ordered by ascending dataset category id, as :func:`load_coco_json` numbers them.
    """
    path = Path(json_file).resolve()
    if not path.is_file():
        raise DatasetError(f"COCO json file not found: {path}")
    st = path.stat()
    classes, id_map = _read_categories_cached(str(path), st.st_mtime_ns, st.st_size)
    return {"thing_classes": list(classes), "thing_dataset_id_to_contiguous_id": dict(id_map)}


class _FileIndex:
    """Answers "does this file exist?" with one directory listing per folder (fast for 100k images)."""

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._listings:
            try:
                self._listings[folder] = frozenset(e.name for e in os.scandir(folder) if not e.is_dir())
            except OSError:
                self._listings[folder] = frozenset()
        return name in self._listings[folder]


def _convert_segmentation(segm: Any, height: int, width: int, where: str, problems: list[str], dropped: list[str]) -> Any:
    """Validated segmentation, or ``None`` when the annotation must be dropped (reason appended)."""
    if isinstance(segm, list):
        def is_valid(p: Any) -> bool:
            return isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0

        valid = [p for p in segm if is_valid(p)]
        if len(valid) < len(segm):
            bad = [len(p) if isinstance(p, list) else type(p).__name__ for p in segm if not is_valid(p)]
            msg = f"{where}: dropped {len(segm) - len(valid)} polygon(s) with fewer than 6 or an odd number of coordinates (lengths {bad})"
            dropped.append(msg if valid else msg + "; no polygon left, annotation dropped")
        return [[float(v) for v in p] for p in valid] or None
    if isinstance(segm, Mapping):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or counts is None:
            problems.append(f"{where}: RLE segmentation needs 'size' [h, w] and 'counts', got keys {sorted(segm)}")
            return None
        if list(size) != [height, width]:
            problems.append(f"{where}: RLE size {list(size)} does not match the image size [h, w] = {[height, width]}")
            return None
        if isinstance(counts, list):
            # Uncompressed RLE (crowd annotations in COCO): run lengths must cover the image exactly.
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                problems.append(f"{where}: uncompressed RLE counts must be non-negative integers summing to h*w = {height * width}")
                return None
            rle = mask_util.frPyObjects(dict(segm), height, width)
            return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        problems.append(f"{where}: RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
        return None
    problems.append(f"{where}: 'segmentation' must be a list of polygons or an RLE dict, got {type(segm).__name__}")
    return None


def load_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    dataset_name: str | None = None,
    keep_empty: bool = False,
    strict: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a COCO instances json into dataset dicts (see the module docstring for their format).

    Args:
        json_file: COCO instances json (``info``/``licenses`` are optional).
        image_root: folder that image ``file_name``s are relative to.
        dataset_name: only used in messages.
        keep_empty: keep images that have no non-crowd annotation (detectron2 drops them for
            training and keeps them for evaluation).
        strict: raise on problems that otherwise only drop an annotation with a warning.

    Returns:
        ``(dataset_dicts, metadata)``: dicts sorted by image id, and ``{"thing_classes",
        "thing_dataset_id_to_contiguous_id", "json_file", "image_root", "evaluator_type"}``.
        Category ids are renumbered 0..K-1 in ascending order of the dataset ids.

    Raises:
        DatasetError: when ``keep_empty=False`` leaves no image (naming the file and what was
            dropped), or listing every problem found (missing image files, bad sizes, unknown
            category ids, duplicate ids, malformed RLE, ...).
    """
    json_path = Path(json_file).resolve()
    image_root = Path(image_root).resolve()
    where_file = f"{json_path}" + (f" (dataset {dataset_name!r})" if dataset_name else "")
    raw = _read_json(json_path)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("images"), list):
        raise DatasetError(f"{where_file}: the top level must be a JSON object with an 'images' list, "
                           f"plus 'annotations' and 'categories'")
    annotations = raw.get("annotations", [])
    if not isinstance(annotations, list):
        raise DatasetError(f"{where_file}: 'annotations' must be a list")
    thing_classes, id_map = _category_mapping(raw.get("categories"), where_file)
    valid_cat_ids = sorted(id_map)

    problems: list[str] = []  # errors: reported all together at the end
    dropped: list[str] = []  # annotations lost with a warning (errors when strict)
    files = _FileIndex()

    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(raw["images"]):
        if not isinstance(img, Mapping) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            problems.append(f"images[{i}] needs an integer 'id' and a string 'file_name', got {img!r:.200}")
            continue
        img_id, file_name = img["id"], img["file_name"]
        where = f"image id={img_id} ({file_name})"
        if img_id in images:
            problems.append(f"{where}: duplicate image id {img_id} (also used by {images[img_id]['file_name']})")
            continue
        height, width = img.get("height"), img.get("width")
        ok = True
        if not (_is_int(height) and height > 0 and _is_int(width) and width > 0):
            problems.append(f"{where}: 'height' and 'width' must be positive integers, got height={height!r} width={width!r}")
            ok = False
        path = os.path.join(image_root, file_name)
        if not files.exists(path):
            problems.append(f"{where}: image file not found: {path}")
            ok = False
        # Register even broken images so their annotations are not reported as orphans.
        images[img_id] = {"file_name": path, "height": height, "width": width, "image_id": img_id,
                          "annotations": [], "_ok": ok}

    seen_ann_ids: set[Any] = set()
    num_clipped = 0
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Mapping) or not _is_int(ann.get("id")) or not _is_int(ann.get("image_id")):
            problems.append(f"annotations[{i}] needs integer 'id' and 'image_id', got {ann!r:.200}")
            continue
        ann_id, img_id = ann["id"], ann["image_id"]
        record = images.get(img_id)
        where = f"image id={img_id}" + (f" ({os.path.basename(record['file_name'])})" if record else "") + f", annotation id={ann_id}"
        if ann_id in seen_ann_ids:
            problems.append(f"{where}: duplicate annotation id {ann_id}")
            continue
        seen_ann_ids.add(ann_id)
        if record is None:
            problems.append(f"{where}: image id {img_id} is not in 'images'")
            continue
        cat_id = ann.get("category_id")
        if not _is_int(cat_id) or cat_id not in id_map:
            problems.append(f"{where}: unknown category id {cat_id!r} (valid ids: {valid_cat_ids})")
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.append(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.append(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        if not record["_ok"]:
            continue  # the image itself is broken; its problem is already reported
        height, width = record["height"], record["width"]
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            dropped.append(f"{where}: bbox [x, y, w, h] = {bbox} has non-positive width/height; annotation dropped")
            continue
        x0, y0, x1, y1 = x, y, x + w, y + h
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            dropped.append(f"{where}: bbox [x, y, w, h] = {bbox} lies outside the {width}x{height} image; annotation dropped")
            continue
        clipped = [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]
        num_clipped += clipped != [x0, y0, x1, y1]

        obj: dict[str, Any] = {"bbox": clipped, "category_id": id_map[cat_id], "iscrowd": int(iscrowd), "id": ann_id}
        if ann.get("segmentation") is not None:
            segm = _convert_segmentation(ann["segmentation"], height, width, where, problems, dropped)
            if segm is None:
                continue
            obj["segmentation"] = segm
        area = ann.get("area")
        obj["area"] = float(area) if _is_number(area) else (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        record["annotations"].append(obj)

    if strict:
        problems += [f"{d} (strict=True)" for d in dropped]
    if problems:
        raise DatasetError(_format_problems(f"{where_file} (image_root={image_root})", problems), problems)
    if dropped:
        logger.warning("%s", _format_problems(f"{where_file}: dropped annotations", dropped))
    if num_clipped:
        logger.info("%s: clipped %d box(es) that extended past the image border", where_file, num_clipped)

    dataset_dicts = []
    num_empty = 0
    for img_id in sorted(images):
        record = images[img_id]
        del record["_ok"]
        if not keep_empty and not any(a["iscrowd"] == 0 for a in record["annotations"]):
            num_empty += 1
            continue
        dataset_dicts.append(record)
    if num_empty:
        logger.info("%s: dropped %d image(s) without non-crowd annotations (keep_empty=False)", where_file, num_empty)
    if not dataset_dicts and not keep_empty:
        reasons = [f"{num_empty} of {len(images)} image(s) have no non-crowd annotation left" if images
                   else "it lists no images"]
        if dropped:
            reasons.append(f"{len(dropped)} annotation(s) were dropped as invalid, e.g. {dropped[0]}")
        raise DatasetError(
            f"{where_file}: no image is left for training: " + "; ".join(reasons) + ". A training set needs "
            "images with at least one valid non-crowd annotation (a test set may keep empty images).",
            reasons,
        )
    logger.info("Loaded %d images from %s", len(dataset_dicts), where_file)
    metadata = {
        "thing_classes": thing_classes,
        "thing_dataset_id_to_contiguous_id": id_map,
        "json_file": str(json_path),
        "image_root": str(image_root),
        "evaluator_type": "coco",
    }
    return dataset_dicts, metadata


def check_images(dataset_dicts: Iterable[Mapping[str, Any]], *, decode: bool = False, raise_error: bool = True) -> list[str]:
    """Check every image file with PIL and compare its size with the dict's height/width.

    ``Image.verify()`` catches most corrupt files without decoding; ``decode=True`` also decodes the
    pixels, which catches truncated files too (slower). Expensive either way: meant for a
    data-checking CLI, not for every training run.
    Returns one line per failure; raises :class:`DatasetError` listing them if ``raise_error``.
    """
    from PIL import Image

    failures = []
    for d in dataset_dicts:
        path = d["file_name"]
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:  # verify() leaves the image unusable: open it again
                size, orientation = im.size, im.getexif().get(0x0112, 1)
                if decode:
                    im.load()
        except Exception as e:  # PIL raises many types for corrupt files
            failures.append(f"image id={d.get('image_id')}: cannot read {path}: {type(e).__name__}: {e}")
            continue
        # EXIF orientations 5..8 transpose the image when it is decoded.
        if orientation in (5, 6, 7, 8):
            size = size[::-1]
        expected = (d.get("width"), d.get("height"))
        if tuple(size) != expected:
            failures.append(f"image id={d.get('image_id')}: {path} is {size[0]}x{size[1]} (w x h) "
                            f"but the dataset says {expected[0]}x{expected[1]}")
    if failures and raise_error:
        raise DatasetError(_format_problems("check_images", failures), failures)
    return failures
