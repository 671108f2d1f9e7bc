"""Issue 27's parity: onnxruntime and torch.export against eager Predictor, on images the export never saw.

Each model is a decisive random model (tests/export/decisive_model.py) in a run directory,
exported once by the framework-export command (the main job's export is shared with
test_onnxruntime_alone.py). Images: noise at three sizes other than the export's 240x320 (one of
them checked to give > 50 detections), a blank image (checked to give none), and two coco_tiny
val images when ../shared/data/coco_tiny exists. Eager is ``Predictor.from_run`` itself: PIL
resize in the mapper, the model, detector_postprocess.

The models other than the main job's (R50-FPN presets, the projects/ plugins) are marked
``export_full`` and left out of the default run (conftest.py): ``pytest -m export_full tests/export``
runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from decisive_model import BLANK
from framework.engine.predictor import Predictor
from parity import WORST, assert_parity, exported_run

COCO_TINY = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco_tiny" / "val2017"
if not COCO_TINY.is_dir():
    COCO_TINY = Path("/work/shared/data/coco_tiny/val2017")

#: The main job's test size with torchvision's resize rule (floored sides, float bilinear).
TORCHVISION_RESIZE = "input.test.augmentations=[{name: ResizeShortestEdgeTorchvision, short_edge_length: [224], max_size: 400}]"
MODELS = {
    "main_job": [],  # model=mask_rcnn_R_18_FPN_quick, the main job's
    "lite_mask_head (projects/)": ["model=mask_rcnn_R_18_FPN_quick_lite"],
    "mask_rcnn_R_50_FPN": ["model=mask_rcnn_R_50_FPN"],
    "faster_rcnn_R_50_FPN": ["model=faster_rcnn_R_50_FPN"],
    "point_rend (projects/)": ["model=point_rend_R_18_FPN_quick"],
    "mask_scoring_rcnn (projects/)": ["model=mask_scoring_rcnn_R_18_FPN_quick"],
    "cascade_rcnn (projects/)": ["model=cascade_mask_rcnn_R_18_FPN_quick"],
    # torchvision's semantics (mask pasting, and its resize in the mapper, as docs/deployment.md advises)
    "mask_rcnn_R_50_FPN_torchvision": ["model=mask_rcnn_R_50_FPN_torchvision", TORCHVISION_RESIZE],
    "faster_rcnn_R_50_FPN_torchvision": ["model=faster_rcnn_R_50_FPN_torchvision", TORCHVISION_RESIZE],
}
FULL = set(MODELS) - {"main_job"}
SIZES = [(301, 199), (131, 97), (389, 517)]


def _noise(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=[pytest.param(k, marks=pytest.mark.export_full) if k in FULL else k for k in MODELS])
def predictors(request, tmp_path_factory):
    if request.param == "main_job":
        run = request.getfixturevalue("main_job_run")
    else:
        run = exported_run(tmp_path_factory.mktemp("run"), MODELS[request.param])
    return request.param, {"eager": Predictor.from_run(run, device="cpu"),
                           **{b: Predictor.from_run(run, backend=b) for b in ("onnxruntime", "torch_export")}}


@pytest.fixture(scope="session", autouse=True)
def report_worst():
    yield
    for (model, backend), w in sorted(WORST.items()):
        print(f"\nparity {model} / {backend}: {w['detections']} detections, worst box {w['box']:.2e} px, "
              f"score {w['score']:.2e}, smallest mask IoU {w['mask_iou']:.4f}")


def _check(predictors, image, name):
    model, by_backend = predictors
    eager = by_backend["eager"](image)
    for backend in ("onnxruntime", "torch_export"):
        assert_parity(eager, by_backend[backend](image), key=(model, backend))
    return eager


def test_generated_images_of_new_sizes(predictors):
    counts = [len(_check(predictors, _noise(size, seed), f"noise {size}")) for seed, size in enumerate(SIZES)]
    assert max(counts) > 50, f"expected an image with more than 50 detections, got {counts}"


def test_blank_image_gives_no_detections(predictors):
    eager = _check(predictors, BLANK, "blank")
    assert len(eager) == 0


@pytest.mark.skipif(not COCO_TINY.is_dir(), reason="../shared/data/coco_tiny is not on this machine")
def test_coco_tiny_images(predictors):
    for path in sorted(os.listdir(COCO_TINY))[:2]:
        _check(predictors, str(COCO_TINY / path), path)
