"""The evaluation of a run: its evaluators over the test loader, built once, run at every
evaluation (during training and with ``eval_only``); with test-time augmentation (``tta``), the
final evaluation also runs the TTA-wrapped model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from framework.engine.builders import Datasets, build_evaluator, build_mapper, to_kwargs
from framework.engine.ddp import unwrap_model
from framework.engine.evaluation_files import INFERENCE_DIR, TTA_INFERENCE_DIR
from framework.utils import comm

__all__ = ["Evaluation", "TTAEvaluation", "TTA_SUFFIX", "build_evaluation"]

logger = logging.getLogger(__name__)

#: Appended to the task names of the TTA evaluation's metrics (``bbox_TTA/AP``), as detectron2 does.
TTA_SUFFIX = "_TTA"


@dataclass(frozen=True)
class TTAEvaluation:
    """The second pass of a final evaluation: ``model`` (a TEST_TIME_AUGMENTATIONS wrapper of the
    run's model) over the same test loader, into its own ``evaluator`` (files in ``inference_TTA/``)."""

    model: torch.nn.Module
    evaluator: Any


class Evaluation:
    """``evaluation() -> {"bbox/AP": ..., "segm/AP": ...}``: the model over the test loader, fed to
    the evaluator; flat metrics on the main process, ``{}`` on the others. Call it on every process.
    ``evaluation.final()`` adds the test-time-augmented metrics when ``tta`` is given.

    Args:
        model: the model to evaluate (a DDP wrapper is looked through: inference runs on the module).
        loader: the test loader (one pass per call).
        evaluator: a :class:`~framework.evaluation.evaluator.DatasetEvaluator` (reset at each call).
        dataset_name: for the log.
        tta: the test-time-augmented pass of :meth:`final`; ``None``: ``final`` is a plain evaluation.
    """

    def __init__(self, *, model: torch.nn.Module, loader: Any, evaluator: Any, dataset_name: str,
                 tta: Optional[TTAEvaluation] = None) -> None:
        self.model = unwrap_model(model)
        self.loader = loader
        self.evaluator = evaluator
        self.dataset_name = dataset_name
        self.tta = tta

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

    def final(self) -> dict[str, float]:
        """The evaluation after the last step (and of ``eval_only``): the plain metrics, then, with
        ``tta``, the wrapped model's, their tasks suffixed ``_TTA`` (``segm_TTA/AP``)."""
        from framework.evaluation.evaluator import (
            SKIPPED_TASK,
            flatten_results,
            inference_context,
            inference_on_dataset,
            results_table,
        )
        from framework.utils.events import name_scope

        metrics = self()
        if self.tta is None:
            return metrics
        logger.info(f"Evaluation with test-time augmentation ({type(self.tta.model).__name__}) on {self.dataset_name}")
        # name_scope: the evaluator's PR curves and failure images go beside the plain ones, not over
        # them; inference_context: the model ends in its own mode, whatever mode the wrapper was in.
        with name_scope("tta"), inference_context(self.model):
            results = inference_on_dataset(self.tta.model, self.loader, self.tta.evaluator)
        # the skipped-image count is the plain pass's: the same loader
        results = {f"{task}{TTA_SUFFIX}": m for task, m in results.items() if task != SKIPPED_TASK}
        if results:
            logger.info(f"Evaluation with test-time augmentation on {self.dataset_name}:\n{results_table(results)}")
        return {**metrics, **flatten_results(results)}


def build_evaluation(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path) -> Evaluation:
    """The config's ``evaluators`` over ``data.test`` with ``dataloader.test`` and ``input.test``;
    the evaluators' files go to ``output_dir/inference`` (``inference_TTA`` for the ``tta`` pass)."""
    from framework.data.build import build_test_loader
    from framework.registry import TEST_TIME_AUGMENTATIONS

    evaluator = build_evaluator(cfg, data.metadata, output_dir / INFERENCE_DIR, data.test)
    loader = build_test_loader(data.test, build_mapper(cfg, "test"), **to_kwargs(cfg.dataloader.test))
    tta = None
    if cfg.get("tta") is not None:
        wrapped = TEST_TIME_AUGMENTATIONS.build(cfg.tta, path="tta", model=unwrap_model(model))
        tta = TTAEvaluation(wrapped, build_evaluator(cfg, data.metadata, output_dir / TTA_INFERENCE_DIR, data.test))
    return Evaluation(model=model, loader=loader, evaluator=evaluator, dataset_name=data.test_name, tta=tta)
