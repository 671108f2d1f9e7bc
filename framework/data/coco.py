"""Load a COCO instances json into detectron2-style dataset dicts, validating it on the way.

A dataset dict describes one image::

    {"file_name": "/abs/path/img.jpg", "height": 480, "width": 640, "image_id": 42,
     "annotations": [{"bbox": [x0, y0, x1, y1],       # XYXY absolute float, clipped to the image
                      "category_id": 0,               # contiguous id in [0, K)
                      "segmentation": [[x, y, ...]] or {"size": [h, w], "counts": "..."},
                      "iscrowd": 0, "id": 7, "area": 123.0}, ...]}

Bad images and annotations are dropped, counted by reason (:data:`DROP_REASONS`) and listed in
one warning; with ``strict=True`` they are all reported together in one :class:`DatasetError`
instead, so that a user can fix all of them at once.
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

__all__ = ["DatasetError", "format_problem_list", "DatasetDicts", "DROP_REASONS", "load_coco_json", "coco_ground_truth",
           "read_coco_categories", "check_images"]

logger = logging.getLogger(__name__)

#: How many problems an error message lists before summarising the rest as a count.
MAX_LISTED_PROBLEMS = 20


class DatasetError(InputError, ValueError):
    """A dataset file is missing or invalid. ``problems`` lists every problem found (one line each)."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


def format_problem_list(problems: list[str]) -> str:
    """One indented ``  - problem`` line each, the first :data:`MAX_LISTED_PROBLEMS`, then how many more."""
    lines = [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)


def _format_problems(header: str, problems: list[str]) -> str:
    return f"{header}: {len(problems)} problem(s) found:\n{format_problem_list(problems)}"


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


class DatasetDicts(list):
    """The dataset dicts loaded from a file (a ``list``), with what loading left out.

    Attributes:
        dropped: reason -> number of images or annotations left out (see :data:`DROP_REASONS`);
            only reasons that occurred.
    """

    def __init__(self, dicts: Iterable[dict[str, Any]] = (), dropped: Mapping[str, int] | None = None) -> None:
        super().__init__(dicts)
        self.dropped: dict[str, int] = dict(dropped or {})


#: Why an item can be left out. ``image/*`` and ``annotation/*`` are bad input (an error when
#: strict); ``filtered/*`` are images a training set does not use (never an error).
DROP_REASONS = {
    "image/malformed_entry": "an 'images' entry without an integer 'id' and a string 'file_name'",
    "image/duplicate_id": "two images with one id (both dropped, with their annotations)",
    "image/bad_size": "'height'/'width' not positive integers",
    "image/missing_file": "the image file does not exist",
    "annotation/malformed_entry": "an 'annotations' entry without integer 'id' and 'image_id'",
    "annotation/duplicate_id": "a second annotation with an id already used",
    "annotation/unknown_image": "'image_id' not among the images",
    "annotation/of_dropped_image": "the annotation's image was dropped",
    "annotation/unknown_category": "'category_id' not among the categories",
    "annotation/bad_iscrowd": "'iscrowd' not 0 or 1",
    "annotation/bad_bbox": "'bbox' not 4 finite numbers",
    "annotation/degenerate_bbox": "bbox width or height <= 0",
    "annotation/bbox_outside_image": "bbox entirely outside the image",
    "annotation/bad_polygon": "polygon(s) with < 3 points or an odd number of coordinates (the annotation "
                              "is dropped when none is left)",
    "annotation/empty_segmentation": "'segmentation' is an empty list",
    "annotation/bad_rle": "RLE without size/counts, of another size than the image, or with bad counts",
    "annotation/bad_segmentation": "'segmentation' neither polygons nor RLE",
    "filtered/no_annotations": "a training image without any annotation",
    "filtered/crowd_only": "a training image with only crowd annotations",
}


class _Findings:
    """Bad items found while loading: one line each, counted by reason."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.counts: dict[str, int] = {}

    def add(self, reason: str, line: str, count: int = 1) -> None:
        assert reason in DROP_REASONS, reason
        self.lines.append(line)
        self.counts[reason] = self.counts.get(reason, 0) + count


def _convert_segmentation(segm: Any, height: int, width: int, where: str, found: _Findings) -> Any:
    """Validated segmentation, or ``None`` when the annotation must be dropped (reason recorded)."""
    if isinstance(segm, list):
        if not segm:
            found.add("annotation/empty_segmentation", f"{where}: 'segmentation' is an empty list; annotation dropped")
            return None

        def is_valid(p: Any) -> bool:
            return isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_number(v) for v in p)

        valid = [p for p in segm if is_valid(p)]
        if len(valid) < len(segm):
            bad = [len(p) if isinstance(p, list) else type(p).__name__ for p in segm if not is_valid(p)]
            msg = (f"{where}: dropped {len(segm) - len(valid)} polygon(s) with fewer than 3 points, an odd number of "
                   f"coordinates or non-finite ones (lengths {bad})")
            found.add("annotation/bad_polygon", msg if valid else msg + "; no polygon left, annotation dropped")
        return [[float(v) for v in p] for p in valid] or None
    if isinstance(segm, Mapping):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or counts is None:
            found.add("annotation/bad_rle", f"{where}: RLE segmentation needs 'size' [h, w] and 'counts', got keys {sorted(segm)}")
            return None
        if list(size) != [height, width]:
            found.add("annotation/bad_rle", f"{where}: RLE size {list(size)} does not match the image size [h, w] = {[height, width]}")
            return None
        if isinstance(counts, list):
            # Uncompressed RLE (crowd annotations in COCO): run lengths must cover the image exactly.
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                found.add("annotation/bad_rle", f"{where}: uncompressed RLE counts must be non-negative integers summing "
                                                f"to h*w = {height * width}")
                return None
            rle = mask_util.frPyObjects(dict(segm), height, width)
            return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        found.add("annotation/bad_rle", f"{where}: RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}")
        return None
    found.add("annotation/bad_segmentation", f"{where}: 'segmentation' must be a list of polygons or an RLE dict, "
                                             f"got {type(segm).__name__}")
    return None


def load_coco_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    dataset_name: str | None = None,
    keep_empty: bool = False,
    strict: bool = False,
) -> tuple[DatasetDicts, dict[str, Any]]:
    """Read a COCO instances json into dataset dicts (see the module docstring for their format).

    Every image and annotation is checked. A bad one (see :data:`DROP_REASONS`: a missing image
    file, a NaN or degenerate box, an unknown category, a duplicate id, a broken polygon, an RLE of
    the wrong size...) is dropped, counted by reason and listed in one warning, or, with
    ``strict=True``, reported in one :class:`DatasetError` listing every problem (so that all can
    be fixed at once). A file that is not a COCO json at all is always an error.

    Args:
        json_file: COCO instances json (``info``/``licenses`` are optional).
        image_root: folder that image ``file_name``s are relative to.
        dataset_name: only used in messages.
        keep_empty: keep images that have no non-crowd annotation (detectron2 drops them for
            training and keeps them for evaluation); dropping them is never an error.
        strict: raise on any bad image or annotation instead of dropping it.

    Returns:
        ``(dataset_dicts, metadata)``: a :class:`DatasetDicts` list sorted by image id (its
        ``dropped`` counts what was left out, by reason), and ``{"thing_classes",
        "thing_dataset_id_to_contiguous_id", "json_file", "image_root", "evaluator_type"}``.
        Category ids are renumbered 0..K-1 in ascending order of the dataset ids.

    Raises:
        DatasetError: the file is missing or not a COCO json; ``strict`` and something is bad;
            or ``keep_empty=False`` leaves no image (naming the file and what was dropped).
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

    found = _Findings()
    files = _FileIndex()

    images: dict[int, dict[str, Any]] = {}
    duplicated: set[int] = set()
    for i, img in enumerate(raw["images"]):
        if not isinstance(img, Mapping) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            found.add("image/malformed_entry", f"images[{i}] needs an integer 'id' and a string 'file_name', got {img!r:.200}")
            continue
        img_id, file_name = img["id"], img["file_name"]
        where = f"image id={img_id} ({file_name})"
        if img_id in images:
            found.add("image/duplicate_id", f"{where}: duplicate image id {img_id} (also used by "
                                            f"{images[img_id]['file_name']}); both images dropped",
                      count=1 if img_id in duplicated else 2)
            duplicated.add(img_id)
            continue
        height, width = img.get("height"), img.get("width")
        ok = True
        if not (_is_int(height) and height > 0 and _is_int(width) and width > 0):
            found.add("image/bad_size", f"{where}: 'height' and 'width' must be positive integers, got height={height!r} width={width!r}")
            ok = False
        path = os.path.join(image_root, file_name)
        if ok and not files.exists(path):
            found.add("image/missing_file", f"{where}: image file not found: {path}")
            ok = False
        # Kept (marked broken) so that their annotations are not reported as orphans.
        images[img_id] = {"file_name": path, "height": height, "width": width, "image_id": img_id,
                          "annotations": [], "_ok": ok}
    for img_id in duplicated:
        images[img_id]["_ok"] = False

    seen_ann_ids: set[Any] = set()
    num_clipped = 0
    of_dropped_image = 0
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Mapping) or not _is_int(ann.get("id")) or not _is_int(ann.get("image_id")):
            found.add("annotation/malformed_entry", f"annotations[{i}] needs integer 'id' and 'image_id', got {ann!r:.200}")
            continue
        ann_id, img_id = ann["id"], ann["image_id"]
        record = images.get(img_id)
        where = f"image id={img_id}" + (f" ({os.path.basename(record['file_name'])})" if record else "") + f", annotation id={ann_id}"
        if ann_id in seen_ann_ids:
            found.add("annotation/duplicate_id", f"{where}: duplicate annotation id {ann_id}; the later one dropped")
            continue
        seen_ann_ids.add(ann_id)
        if record is None:
            found.add("annotation/unknown_image", f"{where}: image id {img_id} is not in 'images'")
            continue
        if not record["_ok"]:
            of_dropped_image += 1  # the image's own problem is already reported
            continue
        cat_id = ann.get("category_id")
        if not _is_int(cat_id) or cat_id not in id_map:
            found.add("annotation/unknown_category", f"{where}: unknown category id {cat_id!r} (valid ids: {valid_cat_ids})")
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            found.add("annotation/bad_iscrowd", f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            found.add("annotation/bad_bbox", f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        height, width = record["height"], record["width"]
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            found.add("annotation/degenerate_bbox", f"{where}: bbox [x, y, w, h] = {bbox} has non-positive width/height")
            continue
        x0, y0, x1, y1 = x, y, x + w, y + h
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            found.add("annotation/bbox_outside_image", f"{where}: bbox [x, y, w, h] = {bbox} lies outside the "
                                                       f"{width}x{height} image")
            continue
        clipped = [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]
        num_clipped += clipped != [x0, y0, x1, y1]

        obj: dict[str, Any] = {"bbox": clipped, "category_id": id_map[cat_id], "iscrowd": int(iscrowd), "id": ann_id}
        if ann.get("segmentation") is not None:
            segm = _convert_segmentation(ann["segmentation"], height, width, where, found)
            if segm is None:
                continue
            obj["segmentation"] = segm
        area = ann.get("area")
        obj["area"] = float(area) if _is_number(area) else (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        record["annotations"].append(obj)

    if strict and found.lines:
        raise DatasetError(_format_problems(f"{where_file} (image_root={image_root}, strict)", found.lines), found.lines)
    if of_dropped_image:
        found.counts["annotation/of_dropped_image"] = of_dropped_image
    if found.lines:
        logger.warning("%s", _format_problems(f"{where_file}: dropped bad items", found.lines))
    if num_clipped:
        logger.info("%s: clipped %d box(es) that extended past the image border", where_file, num_clipped)

    dataset_dicts = DatasetDicts(dropped=found.counts)
    for img_id in sorted(images):
        record = images.pop(img_id)
        if not record.pop("_ok"):
            continue
        if not keep_empty and not any(a["iscrowd"] == 0 for a in record["annotations"]):
            reason = "filtered/crowd_only" if record["annotations"] else "filtered/no_annotations"
            dataset_dicts.dropped[reason] = dataset_dicts.dropped.get(reason, 0) + 1
            continue
        dataset_dicts.append(record)
    filtered = {k: v for k, v in dataset_dicts.dropped.items() if k.startswith("filtered/")}
    if filtered:
        logger.info("%s: %d image(s) not used for training (keep_empty=False): %s", where_file, sum(filtered.values()),
                    ", ".join(f"{k}={v}" for k, v in filtered.items()))
    if not dataset_dicts:
        total = len(raw["images"])
        reasons = [f"it lists {total} image(s), none left"] if total else ["it lists no images"]
        if dataset_dicts.dropped:
            reasons.append("left out: " + ", ".join(f"{k}={v}" for k, v in sorted(dataset_dicts.dropped.items())))
        if found.lines:
            reasons.append(f"e.g. {found.lines[0]}")
        raise DatasetError(
            f"{where_file}: no image is left" + (" for training" if not keep_empty else "") + ": "
            + "; ".join(reasons) + ". "
            + ("A training set needs images with at least one valid non-crowd annotation (a test set may keep "
               "empty images)." if not keep_empty else "Every image was dropped as bad."),
            reasons,
        )
    logger.info("Loaded %d images from %s%s", len(dataset_dicts), where_file, _summary(dataset_dicts.dropped))
    metadata = {
        "thing_classes": thing_classes,
        "thing_dataset_id_to_contiguous_id": id_map,
        "json_file": str(json_path),
        "image_root": str(image_root),
        "evaluator_type": "coco",
    }
    return dataset_dicts, metadata


def _summary(dropped: Mapping[str, int]) -> str:
    return f" (left out: {', '.join(f'{k}={v}' for k, v in sorted(dropped.items()))})" if dropped else ""


def coco_ground_truth(dataset_dicts: Iterable[Mapping[str, Any]], json_file: str | os.PathLike) -> dict[str, Any]:
    """The ground truth that loading accepted, as a COCO json dict for COCOeval.

    The images of ``dataset_dicts`` and the annotations they kept, in the json's own form (dataset
    category ids, ``[x, y, w, h]`` boxes as written, the json's area) except that segmentations
    are the validated ones. Whatever loading dropped (a broken polygon, an empty segmentation, an
    image whose file is missing) is therefore absent here too, and cannot crash COCOeval.
    """
    raw = _read_json(Path(json_file))
    kept = {d["image_id"]: d for d in dataset_dicts}
    accepted = {a["id"]: a for d in kept.values() for a in d.get("annotations", [])}
    images = [img for img in raw["images"] if isinstance(img, Mapping) and img.get("id") in kept]
    annotations = []
    seen: set[int] = set()
    for ann in raw.get("annotations", []):
        if not isinstance(ann, Mapping) or ann.get("id") not in accepted or ann.get("image_id") not in kept:
            continue
        if ann["id"] in seen:  # a duplicate id: loading kept the first one
            continue
        seen.add(ann["id"])
        valid = accepted[ann["id"]]
        ann = {**ann, "iscrowd": valid["iscrowd"], "area": valid["area"]}  # as loading read them (defaults filled)
        if "segmentation" in valid:
            ann["segmentation"] = valid["segmentation"]
        else:
            ann.pop("segmentation", None)
        annotations.append(ann)
    return {"info": raw.get("info", {}), "licenses": raw.get("licenses", []), "images": images,
            "annotations": annotations, "categories": raw["categories"]}


def check_images(dataset_dicts: Iterable[Mapping[str, Any]], *, decode: bool = False, raise_error: bool = True,
                 progress: str | None = None) -> list[str]:
    """Check every image file with PIL and compare its size with the dict's height/width.

    ``Image.verify()`` catches most corrupt files without decoding; ``decode=True`` also decodes the
    pixels, which catches truncated files too (slower). Expensive either way: the main job does it
    once before training under ``bad_data=strict``.
    ``progress``: the description of a tqdm bar (shown on a terminal), or None for none.
    Returns one line per failure; raises :class:`DatasetError` listing them if ``raise_error``.
    """
    import sys

    from PIL import Image
    from tqdm import tqdm

    from .detection_utils import displayed_size

    failures = []
    dataset_dicts = list(dataset_dicts)
    bar = tqdm(dataset_dicts, desc=progress, unit="img", disable=progress is None or not sys.stderr.isatty())
    for d in bar:
        path = d["file_name"]
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:  # verify() leaves the image unusable: open it again
                size = displayed_size(im)
                if decode:
                    im.load()
        except Exception as e:  # PIL raises many types for corrupt files
            failures.append(f"image id={d.get('image_id')}: cannot read {path}: {type(e).__name__}: {e}")
            continue
        expected = (d.get("width"), d.get("height"))
        if tuple(size) != expected:
            failures.append(f"image id={d.get('image_id')}: {path} is {size[0]}x{size[1]} (w x h) "
                            f"but the dataset says {expected[0]}x{expected[1]}")
    if failures and raise_error:
        raise DatasetError(_format_problems("check_images", failures), failures)
    return failures
