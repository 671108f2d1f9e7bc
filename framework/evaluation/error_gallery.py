"""A gallery of failures: the images that lose the most, ground truth beside predictions, every
object and detection marked with what the error analysis made of it.

Which images: per image, the objects missed (TIDE's ``miss``: no detection at any score is
about them) plus the false positives scoring at least ``score_thresh`` (detections of any error
type: cls, loc, both, dupe, bkg; those on a crowd region of their class are not counted, as the AP
does not count them); the ``num_images`` images with the highest sum, ties by image id, images
with no loss left out. Low-scoring false positives are not counted because every model keeps
dozens of them per image and they would decide the ranking while costing little AP.

Each picture (:func:`draw_failure`) has two header lines (image id, file, counts; the colour key),
then the ground truth on the left, each object labelled with its class and what happened to it
(``ok``: a detection took it, with that detection's score, which may be below the threshold;
``miss``; ``cls`` / ``loc``: only a wrong-class / poorly localized detection is about it), and on
the right the detections scoring >= ``score_thresh`` labelled with class, score and error type
(``ok`` for a true positive). Colours are those of the error chart (errors.png), ``ok`` green.
Masks are drawn for ``segm``, boxes always.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from framework.evaluation.error_matching import CLS, CORRECT, ERROR_TYPES, LOC, ErrorAssignment
from framework.evaluation.error_report import COLORS

__all__ = ["Failure", "rank_failures", "draw_failure", "failure_gallery", "write_gallery", "GALLERY_DIR", "OK_COLOR"]

logger = logging.getLogger(__name__)

#: The folder (under an evaluation's output folder) of the gallery's PNGs.
GALLERY_DIR = "failures"
OK_COLOR = (0, 200, 0)  # brighter than the chart's dupe teal, so the two tell apart on images
CROWD_COLOR = (160, 160, 160)


@dataclass(frozen=True)
class Failure:
    """One image of the gallery: ``missed`` objects and ``false_positives`` (score >= the threshold)."""

    image_id: int
    missed: int
    false_positives: int

    @property
    def lost(self) -> int:
        return self.missed + self.false_positives


def rank_failures(assignment: ErrorAssignment, *, num_images: int, score_thresh: float = 0.5) -> list[Failure]:
    """The ``num_images`` images that lose the most (see the module docstring), most first."""
    fp = (assignment.det_error != CORRECT) & ~assignment.det_ignored & (assignment.det_score >= score_thresh)
    images = np.union1d(assignment.gt_image_id, assignment.det_image_id)
    missed = {int(i): int(n) for i, n in zip(*np.unique(assignment.gt_image_id[assignment.gt_missed], return_counts=True))}
    false_pos = {int(i): int(n) for i, n in zip(*np.unique(assignment.det_image_id[fp], return_counts=True))}
    failures = [Failure(int(i), missed.get(int(i), 0), false_pos.get(int(i), 0)) for i in images]
    failures = [f for f in failures if f.lost > 0]
    failures.sort(key=lambda f: (-f.lost, f.image_id))
    return failures[: max(0, int(num_images))]


def _decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of polygons or an RLE (compressed or not)."""
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_util.decode(rle).astype(bool)


def _xyxy(boxes: Sequence[Sequence[float]]) -> torch.Tensor:
    t = torch.tensor([list(b) for b in boxes], dtype=torch.float32).reshape(-1, 4)
    t[:, 2:] += t[:, :2]
    return t


def _masks(segmentations: Sequence[Any], height: int, width: int) -> torch.Tensor | None:
    if not segmentations:
        return None
    return torch.from_numpy(np.stack([_decode(s, height, width) for s in segmentations]))


def _header(lines: Sequence[Sequence[tuple[str, tuple[int, int, int]]]], width: int) -> torch.Tensor:
    """(3, 20 * len(lines) + 2, W) uint8 strip, each line's pieces drawn left to right in their colours;
    W is ``width`` or, if the text is wider, the text's width."""
    from PIL import Image, ImageDraw

    from framework.utils.charts import font

    face = font(13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    needed = max(sum(int(measure.textlength(piece, font=face)) + 6 for piece, _ in line) for line in lines) + 8
    strip = Image.new("RGB", (max(width, needed), 20 * len(lines) + 2), "white")
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        x = 4
        for piece, color in line:
            draw.text((x, 3 + 20 * row), piece, fill=color, font=face)
            x += int(draw.textlength(piece, font=face)) + 6
    return torch.from_numpy(np.array(strip)).permute(2, 0, 1).contiguous()


def draw_failure(
    image: torch.Tensor,
    *,
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    assignment: ErrorAssignment,
    failure: Failure,
    category_names: Mapping[int, str],
    score_thresh: float = 0.5,
    file_name: str = "",
    min_size: int = 0,
) -> torch.Tensor:
    """One gallery picture (see the module docstring).

    Args:
        image: (3, H, W) uint8 RGB of ``failure.image_id``, at the ground truth's height and width.
        coco_gt: the ground truth the assignment was made against (``imgToAnns``, ``imgs``).
        results: the result dicts the assignment indexes (``det_result_index``).
        category_names: dataset category id -> name.
        min_size: an image whose longer side is shorter is drawn enlarged to that length (labels
            have a fixed font size: on small images they would cover the objects); 0: never.

    Returns:
        (3, 42 + h, max(2 w + 4, header width)) uint8 RGB, h x w the (enlarged) image size: the two
        header lines above ground truth | predictions.
    """
    from torchvision.utils import draw_segmentation_masks

    from framework.utils.visualizer import draw_labelled, side_by_side

    image_id = failure.image_id
    info = coco_gt.imgs[image_id]
    height, width = int(info["height"]), int(info["width"])
    if tuple(image.shape[-2:]) != (height, width):
        raise ValueError(f"image {image_id} is {tuple(image.shape[-2:])} but the ground truth says {(height, width)}")
    with_masks = assignment.task == "segm"
    name = lambda c: category_names.get(int(c), str(c))  # noqa: E731
    scale = max(1.0, min_size / max(height, width))

    def panel(xywh: Sequence[Sequence[float]], segmentations: Sequence[Any], labels: list[str],
              colors: list[tuple[int, int, int]]) -> torch.Tensor:
        # Masks are blended at the image's own size (a small image's pixels are few, torchvision's
        # blending is per mask), the result enlarged, and boxes and labels drawn at the final size.
        drawn = image
        if with_masks and segmentations:
            drawn = draw_segmentation_masks(image, _masks(segmentations, height, width), alpha=0.5, colors=colors)
        if scale > 1.0:
            size = (round(height * scale), round(width * scale))
            drawn = torch.nn.functional.interpolate(drawn[None].float(), size=size, mode="bilinear", align_corners=False)
            drawn = drawn[0].round().clamp(0, 255).to(torch.uint8)
        return draw_labelled(drawn, _xyxy(xywh) * scale, labels=labels, colors=colors, label_background=True)

    # Ground truth: each object with what happened to it.
    on_image = np.flatnonzero(assignment.gt_image_id == image_id)
    status = {}
    for j in on_image:
        ann_id = int(assignment.gt_ann_id[j])
        if assignment.gt_matched[j]:
            taker = np.flatnonzero((assignment.det_gt == ann_id) & (assignment.det_error == CORRECT))
            status[ann_id] = (f"ok {assignment.det_score[taker[0]]:.0%}" if taker.size else "ok", OK_COLOR)
        elif assignment.gt_missed[j]:
            status[ann_id] = ("miss", COLORS["miss"])
        else:
            about = np.flatnonzero((assignment.det_gt == ann_id) & np.isin(assignment.det_error, (CLS, LOC)))
            kind = ERROR_TYPES[assignment.det_error[about[0]]] if about.size else "?"
            status[ann_id] = (kind, COLORS.get(kind, (128, 128, 128)))
    annotations = coco_gt.imgToAnns.get(image_id, [])
    shown = [a for a in annotations if a["id"] in status or a.get("iscrowd", 0)]
    gt_labels = [f"{name(a['category_id'])} crowd" if a.get("iscrowd", 0) else f"{name(a['category_id'])} {status[a['id']][0]}"
                 for a in shown]
    gt_colors = [CROWD_COLOR if a.get("iscrowd", 0) else status[a["id"]][1] for a in shown]
    left = panel([a["bbox"] for a in shown], [a.get("segmentation") for a in shown], gt_labels, gt_colors)

    # Predictions above the threshold, by error type.
    dets = np.flatnonzero((assignment.det_image_id == image_id) & (assignment.det_score >= score_thresh))
    dets = dets[np.argsort(assignment.det_score[dets], kind="stable")]  # the highest-scoring drawn last, on top
    kinds = ["ok" if assignment.det_error[k] == CORRECT else ERROR_TYPES[assignment.det_error[k]] for k in dets]
    entries = [results[int(assignment.det_result_index[k])] for k in dets]
    labels = [f"{name(e['category_id'])} {e['score']:.0%} {kind}" for e, kind in zip(entries, kinds)]
    colors = [OK_COLOR if kind == "ok" else COLORS[kind] for kind in kinds]
    right = panel([e["bbox"] for e in entries], [e.get("segmentation") for e in entries], labels, colors)

    pair = side_by_side(left, right)
    title = [(f"image {image_id}" + (f" ({Path(file_name).name})" if file_name else "") +
              f": {failure.missed} missed, {failure.false_positives} false positives >= {score_thresh:g} "
              f"({assignment.task})", (0, 0, 0))]
    key = [("ground truth | predictions:", (0, 0, 0)), ("ok", OK_COLOR), *((t, COLORS[t]) for t in ERROR_TYPES)]
    header = _header([title, key], pair.shape[-1])
    # A header wider than the pair (small images) widens the picture with a white margin.
    pair = torch.nn.functional.pad(pair, (0, header.shape[-1] - pair.shape[-1]), value=255)
    return torch.cat([header, pair], dim=1)


def failure_gallery(
    *,
    coco_gt: Any,
    results: Sequence[Mapping[str, Any]],
    assignment: ErrorAssignment,
    load_image: Callable[[int], tuple[torch.Tensor, str]],
    num_images: int,
    category_names: Mapping[int, str],
    score_thresh: float = 0.5,
    skip_errors: tuple[type[BaseException], ...] = (),
    min_size: int = 512,
) -> list[tuple[Failure, torch.Tensor]]:
    """The gallery: :func:`rank_failures`, each drawn by :func:`draw_failure`.

    Args:
        load_image: image id -> ``((3, H, W) uint8 RGB, file name)``.
        skip_errors: errors of ``load_image`` for an unreadable image, which is then left out with a
            warning (the next image of the ranking takes its place).
        min_size: smaller images are drawn enlarged to this longer side (see :func:`draw_failure`).

    Returns:
        ``[(failure, (3, h, w) uint8 picture)]``, most lost first.
    """
    pictures: list[tuple[Failure, torch.Tensor]] = []
    for failure in rank_failures(assignment, num_images=len(assignment.det_image_id) + len(assignment.gt_image_id),
                                 score_thresh=score_thresh):
        if len(pictures) >= num_images:
            break
        try:
            image, file_name = load_image(failure.image_id)
        except skip_errors as e:
            logger.warning(f"gallery of failures: left out image {failure.image_id}: {e}")
            continue
        pictures.append((failure, draw_failure(image, coco_gt=coco_gt, results=results, assignment=assignment,
                                               failure=failure, category_names=category_names,
                                               score_thresh=score_thresh, file_name=file_name, min_size=min_size)))
    return pictures


def write_gallery(pictures: Sequence[tuple[Failure, torch.Tensor]], out_dir: Union[str, Path]) -> list[Path]:
    """Write ``out_dir/<rank>_image<id>.png`` per picture (rank from 01), after removing the PNGs a
    previous gallery left there; return the paths."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*_image*.png"):
        if re.fullmatch(r"\d+_image\d+\.png", old.name):  # any rank width: a gallery of 100+ too
            old.unlink()
    paths = []
    for rank, (failure, picture) in enumerate(pictures, start=1):
        path = out / f"{rank:02d}_image{failure.image_id}.png"
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths
