"""A hand-built ground truth and detections with exactly one kind of TIDE error each (shared by the
error-analysis tests and the tool test).

Ground truth (four 100x100 images; categories 1 "cat" and 2 "dog"; every object 26 px wide, so
that a detection shifted by 14 px sideways has IoU (26 - 14) / (26 + 14) = 0.3 exactly, for boxes
and for masks alike):

    image 1: cat A [10, 10, 26, 30]   dog B [60, 50, 26, 40]
    image 2: cat C [30, 20, 26, 50]
    image 3: dog D [5, 40, 26, 30]
    image 4: no objects

Masks are the boxes' rectangles (compressed RLE), so box IoU and mask IoU are equal and every
case gives the same numbers for "bbox" and "segm". The perfect detections score A .9, B .8, C .7,
D .6 (all distinct: no ties).
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util

SIZE = 100
CAT, DOG = 1, 2
#: name -> (image id, category, XYWH box, score of its perfect detection)
OBJECTS = {
    "A": (1, CAT, [10, 10, 26, 30], 0.9),
    "B": (1, DOG, [60, 50, 26, 40], 0.8),
    "C": (2, CAT, [30, 20, 26, 50], 0.7),
    "D": (3, DOG, [5, 40, 26, 30], 0.6),
}
#: Sideways shift giving IoU 0.3 with the object, staying inside the image and off the others.
LOC_SHIFT = {"A": 14, "B": -14, "C": 14, "D": 14}


def rle(box: list[float]) -> dict:
    """The rectangle of an XYWH box with integer corners, as a compressed RLE with str counts."""
    x, y, w, h = (int(v) for v in box)
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    mask[y : y + h, x : x + w] = 1
    encoded = mask_util.encode(mask)
    encoded["counts"] = encoded["counts"].decode("utf-8")
    return encoded


def ground_truth(*, with_masks: bool = True) -> dict:
    """The COCO json dict of the module docstring (no ``info`` / ``licenses``, as some exports)."""
    annotations = []
    for k, (image_id, category, box, _) in enumerate(OBJECTS.values(), start=1):
        ann = {"id": k, "image_id": image_id, "category_id": category, "bbox": box, "area": box[2] * box[3],
               "iscrowd": 0}
        if with_masks:
            ann["segmentation"] = rle(box)
        annotations.append(ann)
    return {
        "images": [{"id": i, "file_name": f"{i:06d}.png", "height": SIZE, "width": SIZE} for i in (1, 2, 3, 4)],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
        "annotations": annotations,
    }


def detection(image_id: int, category: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category, "bbox": [float(v) for v in box], "score": score,
            "segmentation": rle(box)}


def perfect() -> list[dict]:
    return [detection(i, c, box, s) for i, c, box, s in OBJECTS.values()]


def shifted(box: list[float], dx: int) -> list[float]:
    return [box[0] + dx, *box[1:]]


def case(name: str) -> tuple[list[dict], float]:
    """``(detections, AP50 by hand)`` of the case in which all lost AP is of error type ``name``
    ("perfect": nothing is lost)."""
    if name == "perfect":
        return perfect(), 100.0
    if name == "dupe":
        # A copy of each true positive, scoring just below it: cat reads TP, FP, TP, FP: precision
        # 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1; 51 thresholds (<= 0.5) at 1, 50 at 2/3.
        dupes = [detection(i, c, box, s - 0.05) for i, c, box, s in OBJECTS.values()]
        return perfect() + dupes, (51 + 50 * 2 / 3) / 101 * 100
    if name == "loc":
        # Right class, IoU 0.3: no true positive at all.
        return [detection(i, c, shifted(box, LOC_SHIFT[k]), s) for k, (i, c, box, s) in OBJECTS.items()], 0.0
    if name == "cls":
        # A perfect box with the other class: no true positive at all.
        return [detection(i, CAT + DOG - c, box, s) for i, c, box, s in OBJECTS.values()], 0.0
    if name == "bkg":
        # The highest-scoring cat is on the empty image: cat AP 2/3 at every threshold, dog 100.
        return perfect() + [detection(4, CAT, [40, 40, 20, 20], 0.95)], (200 / 3 + 100) / 2
    if name == "bkg_same_image":
        # The same, on an empty part of image 1 (IoU 0 with A and B).
        return perfect() + [detection(1, CAT, [40, 75, 15, 15], 0.95)], (200 / 3 + 100) / 2
    if name == "miss":
        # D is not detected: dog recall 1/2, precision 1 at the 51 thresholds <= 0.5; cat 100.
        return [d for d in perfect() if d["image_id"] != 3], (51 / 101 * 100 + 100) / 2
    if name == "both":
        # A dog detection where cat A is, shifted to IoU 0.3 (wrong class, poorly localized), scoring highest.
        _, _, box, _ = OBJECTS["A"]
        return perfect() + [detection(1, DOG, shifted(box, 14), 0.95)], (100 + 200 / 3) / 2
    raise KeyError(name)


#: The cases with one error type (the key of its dAP).
SINGLE_ERROR_CASES = {"dupe": "dupe", "loc": "loc", "cls": "cls", "bkg": "bkg", "bkg_same_image": "bkg",
                      "miss": "miss", "both": "both"}


def instances_of(dets: list[dict], image_id: int):
    """The detections of ``image_id`` as the model's ``Instances`` (contiguous classes: cat 0, dog 1;
    masks the boxes' rectangles), for feeding a COCOEvaluator."""
    import torch

    from framework.structures import Boxes, Instances

    mine = [d for d in dets if d["image_id"] == image_id]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)], dtype=torch.float32)
    masks = torch.zeros(len(mine), SIZE, SIZE, dtype=torch.bool)
    for k, d in enumerate(mine):
        x, y, w, h = (int(v) for v in d["bbox"])
        masks[k, y : y + h, x : x + w] = True
    return Instances((SIZE, SIZE), pred_boxes=Boxes(boxes.reshape(-1, 4)),
                     scores=torch.tensor([d["score"] for d in mine], dtype=torch.float32),
                     pred_classes=torch.tensor([d["category_id"] - 1 for d in mine], dtype=torch.int64),
                     pred_masks=masks)
