"""Evaluation: the DatasetEvaluator protocol, the COCO evaluator, and the inference loop."""

from framework.evaluation.coco_evaluation import COCOEvaluator, instances_to_coco_json
from framework.evaluation.coco_metrics import evaluate_coco_results, evaluate_predictions_json, load_coco_gt
from framework.evaluation.evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    print_csv_format,
    results_table,
)

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "COCOEvaluator",
    "inference_on_dataset",
    "inference_context",
    "print_csv_format",
    "results_table",
    "instances_to_coco_json",
    "load_coco_gt",
    "evaluate_coco_results",
    "evaluate_predictions_json",
]
