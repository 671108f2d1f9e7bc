"""The evaluation of a run: its evaluators over the test loader, built once, run at every
evaluation (during training and with ``eval_only``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from framework.engine.builders import Datasets, build_evaluator, build_mapper, to_kwargs
from framework.engine.ddp import unwrap_model
from framework.engine.evaluation_files import INFERENCE_DIR
from framework.utils import comm

__all__ = ["Evaluation", "build_evaluation"]

logger = logging.getLogger(__name__)


class Evaluation:
    """``evaluation() -> {"bbox/AP": ..., "segm/AP": ...}``: the model over the test loader, fed to
    the evaluator; flat metrics on the main process, ``{}`` on the others. Call it on every process.

    Args:
        model: the model to evaluate (a DDP wrapper is looked through: inference runs on the module).
        loader: the test loader (one pass per call).
        evaluator: a :class:`~framework.evaluation.evaluator.DatasetEvaluator` (reset at each call).
        dataset_name: for the log.
    """

    def __init__(self, *, model: torch.nn.Module, loader: Any, evaluator: Any, dataset_name: str) -> None:
        self.model = unwrap_model(model)
        self.loader = loader
        self.evaluator = evaluator
        self.dataset_name = dataset_name

    @property
    def metric_names(self) -> Optional[set[str]]:
        """What a call returns, as far as the evaluators can tell from the model's output fields
        (``None`` when they cannot)."""
        return self.evaluator.metric_names(getattr(self.model, "output_fields", None))

    def __call__(self) -> dict[str, float]:
        from framework.evaluation.evaluator import flatten_results, inference_on_dataset, results_table

        comm.broadcast_buffers(self.model)  # every rank evaluates the model rank 0 checkpoints
        results = inference_on_dataset(self.model, self.loader, self.evaluator)
        if results:
            logger.info(f"Evaluation on {self.dataset_name}:\n{results_table(results)}")
        return flatten_results(results)


def build_evaluation(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path) -> Evaluation:
    """The config's ``evaluators`` over ``data.test`` with ``dataloader.test`` and ``input.test``;
    the evaluators' files go to ``output_dir/inference``."""
    from framework.data.build import build_test_loader

    evaluator = build_evaluator(cfg, data.metadata, output_dir / INFERENCE_DIR, data.test)
    loader = build_test_loader(data.test, build_mapper(cfg, "test"), **to_kwargs(cfg.dataloader.test))
    return Evaluation(model=model, loader=loader, evaluator=evaluator, dataset_name=data.test_name)
