"""The gallery of failures: which images lose the most (hand-counted), what each picture marks, and
that unreadable images and stale files are handled."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from error_cases import OBJECTS, SIZE, detection, ground_truth, perfect
from framework.data.detection_utils import ImageReadError
from framework.evaluation.coco_metrics import load_coco_gt
from framework.evaluation.error_analysis import error_assignments
from framework.evaluation.error_gallery import (
    OK_COLOR,
    Failure,
    draw_failure,
    failure_gallery,
    rank_failures,
    write_gallery,
)
from framework.evaluation.error_report import COLORS

NAMES = {1: "cat", 2: "dog"}


def _detections() -> list[dict]:
    """Hand-counted losses (score threshold 0.5):
    image 1: A, B found; A's duplicate at .6 (dupe, counted)                       -> 0 missed + 1 FP
    image 2: C found; a background box at .3 (below the threshold, not counted)    -> 0
    image 3: D missed (nothing near it); a background box at .7                    -> 1 missed + 1 FP
    image 4: no objects; a background box at .95                                   -> 1 FP
    """
    _, _, box_a, _ = OBJECTS["A"]
    return [d for d in perfect() if d["image_id"] != 3] + [
        detection(1, 1, box_a, 0.6),
        detection(2, 1, [70, 70, 20, 20], 0.3),
        detection(3, 2, [60, 60, 20, 20], 0.7),
        detection(4, 1, [40, 40, 20, 20], 0.95),
    ]


def _assignment(task: str = "bbox"):
    return error_assignments(gt=ground_truth(), results=_detections(), tasks=[task])[task]


def test_rank_failures_hand_counted():
    ranked = rank_failures(_assignment(), num_images=10)
    assert ranked == [Failure(3, 1, 1), Failure(1, 0, 1), Failure(4, 0, 1)]  # image 2 loses nothing counted
    assert rank_failures(_assignment(), num_images=2) == ranked[:2]
    # At threshold 0.2 image 2's low-scoring background box counts too.
    assert Failure(2, 0, 1) in rank_failures(_assignment(), num_images=10, score_thresh=0.2)


def _image(value: int = 100) -> torch.Tensor:
    return torch.full((3, SIZE, SIZE), value, dtype=torch.uint8)


def _pixel(picture: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    return tuple(picture[:, y, x].tolist())


def test_picture_marks_missed_objects_and_errors_by_colour():
    coco = load_coco_gt(ground_truth())
    picture = draw_failure(_image(), coco_gt=coco, results=_detections(), assignment=_assignment(),
                           failure=Failure(3, 1, 1), category_names=NAMES)
    # Two header lines (42 px), then ground truth | predictions, widened to the header's text.
    assert picture.dtype == torch.uint8 and picture.shape[:2] == (3, 42 + SIZE) and picture.shape[2] >= 2 * SIZE + 4
    header, right = 42, SIZE + 4
    # Left: D [5, 40, 26, 30] outlined in the miss colour (the middle of its left edge, clear of the label).
    assert _pixel(picture, 5, header + 60) == COLORS["miss"]
    # Right: the background detection [60, 60, 20, 20] outlined in the bkg colour.
    assert _pixel(picture, right + 60, header + 75) == COLORS["bkg"]
    # Nothing drawn where there is nothing: the plain image.
    assert _pixel(picture, right + 40, header + 20) == (100, 100, 100)


def test_small_images_are_drawn_enlarged():
    coco = load_coco_gt(ground_truth())
    picture = draw_failure(_image(), coco_gt=coco, results=_detections(), assignment=_assignment(),
                           failure=Failure(3, 1, 1), category_names=NAMES, min_size=200)
    assert picture.shape[:2] == (3, 42 + 200) and picture.shape[2] >= 2 * 200 + 4
    assert _pixel(picture, 10, 42 + 120) == COLORS["miss"]  # D's left edge, x 5 -> 10, y 60 -> 120


def test_picture_marks_found_objects_and_duplicates():
    coco = load_coco_gt(ground_truth())
    picture = draw_failure(_image(), coco_gt=coco, results=_detections(), assignment=_assignment(),
                           failure=Failure(1, 0, 1), category_names=NAMES)
    header, right = 42, SIZE + 4
    assert _pixel(picture, 10, header + 30) == OK_COLOR  # A [10, 10, 26, 30]: found
    # On the right A's true positive (.9) and its duplicate (.6) have the same box: the higher score is
    # drawn last, on top.
    assert _pixel(picture, right + 10, header + 30) == OK_COLOR


def test_segm_pictures_draw_masks():
    coco = load_coco_gt(ground_truth())
    picture = draw_failure(_image(0), coco_gt=coco, results=_detections(), assignment=_assignment("segm"),
                           failure=Failure(3, 1, 1), category_names=NAMES)
    inside_d = _pixel(picture, 18, 42 + 55)  # the middle of D's mask, blended with the miss colour
    assert inside_d != (0, 0, 0) and inside_d[0] > 0


def test_unreadable_images_are_replaced_and_stale_files_removed(tmp_path):
    coco = load_coco_gt(ground_truth())

    def load(image_id: int):
        if image_id == 3:
            raise ImageReadError("cannot read 000003.png")
        return _image(), f"{image_id:06d}.png"

    pictures = failure_gallery(coco_gt=coco, results=_detections(), assignment=_assignment(), load_image=load,
                               num_images=2, category_names=NAMES, skip_errors=(ImageReadError,))
    assert [f.image_id for f, _ in pictures] == [1, 4]
    with pytest.raises(ImageReadError):
        failure_gallery(coco_gt=coco, results=_detections(), assignment=_assignment(), load_image=load,
                        num_images=2, category_names=NAMES)
    (tmp_path / "07_image9.png").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("kept")
    paths = write_gallery(pictures, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_image1.png", "02_image4.png", "notes.txt"]
    with Image.open(paths[0]) as written:
        assert written.size == tuple(pictures[0][1].shape[2:0:-1])


def test_box_gallery_of_a_ground_truth_without_masks():
    gt = ground_truth(with_masks=False)
    dets = [{k: v for k, v in d.items() if k != "segmentation"} for d in _detections()]
    assignment = error_assignments(gt=gt, results=dets, tasks=["bbox"])["bbox"]
    picture = draw_failure(_image(), coco_gt=load_coco_gt(gt), results=dets, assignment=assignment,
                           failure=Failure(3, 1, 1), category_names=NAMES)
    assert _pixel(picture, 5, 42 + 60) == COLORS["miss"]
