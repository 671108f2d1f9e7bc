"""A built-in synthetic instance-segmentation dataset in COCO format (trains on a CPU in minutes).

Each image has a textured background (smoothed noise, a colour gradient, random lines) and 1..6
filled shapes, one class per shape (``disk``, ``square``, ``triangle``, ``cross``), each with a
random colour, size (20 px up to half the shorter image side) and rotation. Shapes occlude each
other: every annotation describes only the *visible* part of its shape, and shapes that would be
mostly hidden are left out of the image altogether, so the labels are complete. Unoccluded shapes
are stored as their exact polygon, occluded ones as compressed RLE.

The category ids are deliberately not contiguous (2, 5, 9, 12), so that the id mapping of the
loader and the evaluator is exercised. Generation is deterministic: the same arguments give
byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_VERSION",
    "DEFAULT_NUM_IMAGES",
    "generate_synthetic_coco",
    "synthetic_cache_dir",
    "ensure_builtin_synthetic",
]

logger = logging.getLogger(__name__)

#: COCO categories of the dataset. Ids are non-contiguous on purpose.
SYNTHETIC_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 2, "name": "disk"},
    {"id": 5, "name": "square"},
    {"id": 9, "name": "triangle"},
    {"id": 12, "name": "cross"},
)
#: Name of the cache folder; bump it whenever the generator's output changes.
SYNTHETIC_VERSION = "synthetic_v2"
#: Number of images of each split of the built-in dataset.
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 300, "val": 50}
#: Seed of the built-in dataset (the split is mixed into the seed, so splits differ).
DEFAULT_SEED = 0
#: Written last into a finished dataset folder.
MARKER_FILE = "COMPLETE"

_SPLIT_CODES = {"train": 0, "val": 1}
IMAGE_SIDE_RANGE = (160, 320)  # px, each side drawn independently: aspect ratios 1:2 .. 2:1
# px, diameter of the shape's circumscribed circle. Below ~20 px a rotated square, a disk and a
# cross blur into the same blob under the sensor noise: the labels would be guesses, not "small".
MIN_OBJECT_SIZE = 20
MAX_OBJECTS = 6
MIN_VISIBLE_AREA = 24  # px; a shape showing less is not drawn
MIN_VISIBLE_FRACTION = 0.3  # of its own area; a shape hidden more than this is not drawn
DISK_VERTICES = 24


def _shape_polygon(name: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) of shape ``name`` with circumradius ``radius``, rotated by ``angle``, at (cx, cy)."""
    if name == "disk":
        t = np.arange(DISK_VERTICES) * (2 * np.pi / DISK_VERTICES)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "square":
        t = np.arange(4) * (np.pi / 2) + np.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "triangle":
        t = np.arange(3) * (2 * np.pi / 3) - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "cross":
        a = 0.3  # half-width of an arm; arm ends lie on the unit circle
        b = float(np.sqrt(1 - a * a))
        pts = np.array([(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
                        (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)])
    else:
        raise ValueError(f"unknown synthetic shape {name!r}")
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T * radius + np.array([cx, cy])


def _rasterize(polygon: list[float], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a flat polygon, rasterised by pycocotools exactly as the evaluator will."""
    rle = mask_util.merge(mask_util.frPyObjects([polygon], height, width))
    return mask_util.decode(rle).astype(bool)


def _random_color(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb) * 255


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 255]: smoothed noise + a linear gradient + random lines, muted."""
    grid = rng.uniform(0, 255, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)).astype(np.uint8)
    noise = np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR), dtype=np.float64)
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = xs * np.cos(direction) + ys * np.sin(direction)
    ramp = ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6))[..., None]
    c0, c1 = _random_color(rng, (0, 0.5), (0.2, 0.9)), _random_color(rng, (0, 0.5), (0.2, 0.9))
    bg = 0.5 * noise + 0.5 * (c0 * (1 - ramp) + c1 * ramp)
    # Pull towards grey so that the saturated shapes stand out from the texture.
    bg = 0.6 * bg + 0.4 * bg.mean(axis=2, keepdims=True)

    image = Image.fromarray(bg.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        color = tuple(int(v) for v in _random_color(rng, (0, 0.4), (0.1, 0.9)))
        draw.line([(float(x0), float(y0)), (float(x1), float(y1))], fill=color, width=int(rng.integers(1, 4)))
    return np.asarray(image, dtype=np.float64)


def _bbox_of_mask(mask: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of the pixels set in ``mask`` (H, W): pixel i covers [i, i + 1)."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _make_image(rng: np.random.Generator, image_id: int, first_ann_id: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image (H, W, 3) uint8 and its COCO annotations."""
    height, width = (int(v) for v in rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1, size=2))
    image = _background(rng, height, width)

    # Shapes in z-order (last = on top).
    shapes = []
    max_size = min(height, width) / 2
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        category = SYNTHETIC_CATEGORIES[int(rng.integers(len(SYNTHETIC_CATEGORIES)))]
        radius = float(np.exp(rng.uniform(np.log(MIN_OBJECT_SIZE), np.log(max_size)))) / 2
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        polygon = _shape_polygon(category["name"], cx, cy, radius, rng.uniform(0, 2 * np.pi))
        # Round first, so the stored polygon rasterises to exactly the mask used for drawing.
        flat = [round(float(v), 2) for v in polygon.ravel()]
        color = _random_color(rng, (0.55, 1.0), (0.55, 1.0))
        shapes.append((category, flat, _rasterize(flat, height, width), color))

    # Walk from the top down: a shape is kept only if enough of it shows below the kept shapes
    # above it. Dropped shapes are not drawn at all, so every visible shape is annotated.
    occupied = np.zeros((height, width), dtype=bool)
    kept = []
    for category, flat, mask, color in reversed(shapes):
        visible = mask & ~occupied
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA or area < MIN_VISIBLE_FRACTION * mask.sum():
            continue
        occluded = area < mask.sum()
        occupied |= mask
        kept.append((category, flat, mask, visible, occluded, color))
    kept.reverse()

    annotations = []
    for category, flat, mask, visible, occluded, color in kept:
        image[mask] = color  # bottom first: later shapes paint over earlier ones
        if occluded:
            rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
            segmentation: Any = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        else:
            segmentation = [flat]
        annotations.append({
            "id": first_ann_id + len(annotations),
            "image_id": image_id,
            "category_id": category["id"],
            "bbox": _bbox_of_mask(visible),
            "area": float(visible.sum()),
            "iscrowd": 0,
            "segmentation": segmentation,
        })
    image += rng.normal(0, 6, size=image.shape)  # sensor-like noise, also on the shapes
    return np.clip(image, 0, 255).round().astype(np.uint8), annotations


def generate_synthetic_coco(root: str | os.PathLike, *, split: Literal["train", "val"], num_images: int, seed: int) -> Path:
    """Write ``num_images`` PNGs to ``root/<split>/`` and their COCO json to ``root/annotations/``.

    Deterministic: the random generator is seeded with ``(seed, split)``, so the same arguments
    give byte-identical files and the two splits differ even for the same seed.

    Returns:
        Path of the json, ``root/annotations/instances_<split>.json`` (image root: ``root/<split>``).
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    root = Path(root)
    image_dir, json_file = root / split, root / "annotations" / f"instances_{split}.json"
    image_dir.mkdir(parents=True, exist_ok=True)
    json_file.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels, anns = _make_image(rng, image_id, first_ann_id=len(annotations) + 1)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "height": pixels.shape[0], "width": pixels.shape[1]})
        annotations += anns

    coco = {
        "info": {"description": f"framework synthetic shapes ({SYNTHETIC_VERSION}, split={split}, seed={seed})"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c, supercategory="shape") for c in SYNTHETIC_CATEGORIES],
    }
    json_file.write_text(json.dumps(coco, separators=(",", ":")), encoding="utf-8")
    return json_file


def synthetic_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the built-in dataset: ``<cache>/synthetic_v2`` where ``<cache>`` is ``cache_dir``,
    else ``$FRAMEWORK_CACHE``, else ``~/.cache/framework``."""
    base = cache_dir or os.environ.get("FRAMEWORK_CACHE") or Path.home() / ".cache" / "framework"
    return Path(base).expanduser().resolve() / SYNTHETIC_VERSION


def _split_paths(dataset_dir: Path) -> dict[str, tuple[Path, Path]]:
    return {split: (dataset_dir / "annotations" / f"instances_{split}.json", dataset_dir / split) for split in DEFAULT_NUM_IMAGES}


def ensure_builtin_synthetic(cache_dir: str | os.PathLike | None = None) -> dict[str, tuple[Path, Path]]:
    """Generate the built-in dataset on first use; return ``{split: (json_file, image_root)}``.

    Generation writes into a temporary sibling folder that is renamed into place once complete
    (with its marker file), so an interrupted run never leaves a half-written dataset behind. A
    dataset folder without the marker is regenerated.
    """
    dataset_dir = synthetic_cache_dir(cache_dir)
    if (dataset_dir / MARKER_FILE).is_file():
        return _split_paths(dataset_dir)

    dataset_dir.parent.mkdir(parents=True, exist_ok=True)
    if dataset_dir.exists():
        logger.warning("%s has no %s marker (an incomplete dataset?); regenerating it", dataset_dir, MARKER_FILE)
        shutil.rmtree(dataset_dir, ignore_errors=True)
    logger.info("Generating the built-in synthetic dataset into %s", dataset_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SYNTHETIC_VERSION}.tmp-", dir=dataset_dir.parent))
    try:
        for split, num_images in DEFAULT_NUM_IMAGES.items():
            generate_synthetic_coco(tmp, split=split, num_images=num_images, seed=DEFAULT_SEED)
        (tmp / MARKER_FILE).write_text(f"{SYNTHETIC_VERSION} {DEFAULT_NUM_IMAGES}\n", encoding="utf-8")
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            # Another process finished first (the target exists now): use its copy.
            if not (dataset_dir / MARKER_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _split_paths(dataset_dir)
