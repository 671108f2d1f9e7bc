"""Where a run directory keeps its last evaluation: the COCO results the evaluator wrote, and the
ground truth they were scored against (for ``tools/analyze_results.py RUN_DIR``).

The COCO evaluator writes both into ``<run>/inference/``: ``coco_instances_results.json`` at every
evaluation, ``coco_ground_truth.json`` (what the loader accepted of the test json) once. A run
written before the evaluator kept the ground truth has only the results: its ground truth is
rebuilt from the run's ``config.yaml`` through the dataset catalog, as the run built it (so it
needs the test set's json and images where the config, or ``$FRAMEWORK_DATASETS``, says).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from framework.errors import EvaluationInputError
from framework.evaluation.coco_evaluation import GROUND_TRUTH_FILE_NAME, RESULTS_FILE_NAME

__all__ = ["INFERENCE_DIR", "TTA_INFERENCE_DIR", "EvaluationFiles", "last_evaluation_files", "test_image_files"]

logger = logging.getLogger(__name__)

#: The folder of a run directory the evaluators write into (:func:`framework.engine.evaluation.build_evaluation`).
INFERENCE_DIR = "inference"
#: Where they write the evaluation with test-time augmentation (``tta``), detectron2's folder name.
TTA_INFERENCE_DIR = "inference_TTA"


@dataclass(frozen=True)
class EvaluationFiles:
    """The inputs of a run's last evaluation.

    Attributes:
        results: the COCO results json.
        ground_truth: the ground-truth json the evaluator kept, or (older runs) the ground truth
            rebuilt from the dataset catalog, as a COCO json dict.
        ground_truth_source: where ``ground_truth`` comes from, for messages and reports.
    """

    results: Path
    ground_truth: Union[Path, dict[str, Any]]
    ground_truth_source: str


def last_evaluation_files(run_dir: Union[str, Path]) -> EvaluationFiles:
    """The results and ground truth of the last evaluation of the run in ``run_dir``.

    Raises:
        EvaluationInputError: ``run_dir`` is not a run directory, or has no evaluation results.
        ConfigError / DatasetError: an older run whose test set can no longer be loaded.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvaluationInputError(f"run directory not found: '{run_dir}'")
    folder = run_dir / INFERENCE_DIR
    results = folder / RESULTS_FILE_NAME
    if not results.is_file():
        raise EvaluationInputError(
            f"'{run_dir}' holds no evaluation results: expected '{results}', which the COCO evaluator of a run "
            "writes at every evaluation; for other files pass --gt GT.json --dt RESULTS.json")
    ground_truth = folder / GROUND_TRUTH_FILE_NAME
    if ground_truth.is_file():
        return EvaluationFiles(results, ground_truth, f"'{ground_truth}'")
    gt, source = _ground_truth_from_config(run_dir)
    logger.warning(f"'{run_dir}' has no {INFERENCE_DIR}/{GROUND_TRUTH_FILE_NAME} (a run from before the evaluator kept "
                   f"it): using {source}; images whose files are missing now are left out of it")
    return EvaluationFiles(results, gt, source)


def test_image_files(run_dir: Union[str, Path]) -> dict[int, str]:
    """``{image id: image file}`` of the run's test set, through the dataset catalog as the run
    loaded it (``dataset.test`` of its ``config.yaml``): where a gallery of failures reads its images.

    Raises:
        EvaluationInputError: the run directory has no config.yaml naming its test set.
        ConfigError / DatasetError: its test set can no longer be loaded.
    """
    from framework.data import get_dataset

    name, _ = _test_set(Path(run_dir))
    return {int(d["image_id"]): d["file_name"] for d in get_dataset(name) if "file_name" in d}


def _test_set(run_dir: Path) -> tuple[str, Path]:
    """The registered name of the run's test set and the config it comes from."""
    from omegaconf import OmegaConf

    from framework.engine.builders import register_split

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise EvaluationInputError(f"'{run_dir}' has no config.yaml naming its test set: pass the ground truth with "
                                   "--gt GT.json --dt RESULTS.json (and --image-root for the images)")
    cfg = OmegaConf.load(config)
    test = OmegaConf.select(cfg, "dataset.test")
    if test is None:
        raise EvaluationInputError(f"'{config}' has no dataset.test: pass the ground truth with --gt GT.json --dt RESULTS.json")
    return register_split(test, "dataset.test", keep_empty=True), config


def _ground_truth_from_config(run_dir: Path) -> tuple[dict[str, Any], str]:
    """The test set's ground truth as a run builds it for its evaluator (:func:`~framework.engine.builders.build_evaluator`)."""
    from framework.data import coco_ground_truth, get_dataset, get_metadata

    if not (run_dir / "config.yaml").is_file():
        raise EvaluationInputError(f"'{run_dir}' has neither {INFERENCE_DIR}/{GROUND_TRUTH_FILE_NAME} nor a config.yaml "
                                   "naming its test set: pass the ground truth with --gt GT.json --dt RESULTS.json")
    name, config = _test_set(run_dir)
    json_file = get_metadata(name).json_file
    if json_file is None:
        raise EvaluationInputError(f"dataset {name!r} of '{config}' has no COCO json (metadata json_file): pass the "
                                   "ground truth with --gt GT.json --dt RESULTS.json")
    return coco_ground_truth(get_dataset(name), json_file), f"the ground truth of dataset {name!r} ('{json_file}')"
