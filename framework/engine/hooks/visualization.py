"""VisualizationHook: ground truth beside predictions for a few fixed validation images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from framework.engine.hooks.base import HOOKS, Hook, Priority
from framework.errors import ConfigError
from framework.utils import comm

__all__ = ["VisualizationHook", "VisualizationData"]

logger = logging.getLogger(__name__)


@dataclass
class VisualizationData:
    """What the hook draws, given to the trainer as ``trainer.vis_data`` by the run.

    Attributes:
        dataset_dicts: the validation dataset dicts; the first ``num_images`` are drawn.
        mapper: the test-time mapper (dataset dict -> model input).
        class_names, colors: from the dataset metadata.
        load_gt: ``dataset_dict -> (image (3, H, W) uint8 RGB, gt Instances at that size)``.
    """

    dataset_dicts: Sequence[dict]
    mapper: Callable[[dict], dict]
    class_names: Sequence[str]
    colors: Sequence[tuple[int, int, int]]
    load_gt: Callable[[dict], tuple[torch.Tensor, Any]]


@HOOKS.register()
class VisualizationHook(Hook):
    """Put ``vis/<image id>`` images (ground truth | predictions) in the event storage for TensorBoard.

    Runs every ``period`` steps and after the last one (``0``: only after the last), after the
    evaluation of the same step. Needs ``trainer.vis_data`` (:class:`VisualizationData`).

    Knobs:
        num_images: how many validation images (always the same ones, so runs compare).
        score_thresh: predictions below this score are not drawn.
    """

    priority = Priority.LOW + 5

    def __init__(self, *, period: int = 0, num_images: int = 4, score_thresh: float = 0.5) -> None:
        if period < 0 or num_images < 0:
            raise ConfigError(f"VisualizationHook: period and num_images must be >= 0, got {period}, {num_images}")
        self.period = period
        self.num_images = num_images
        self.score_thresh = score_thresh

    def before_train(self) -> None:
        if getattr(self.trainer, "vis_data", None) is None:
            raise ConfigError(
                f"hook {self.name or 'VisualizationHook'} needs trainer.vis_data (set by the run); "
                "remove the hook with hooks.<key>=null when training without validation data"
            )

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter != self.trainer.max_iter:
            self.visualize()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:
            self.visualize()

    @torch.no_grad()
    def visualize(self) -> None:
        """Run the model on the fixed images and put one side-by-side image per input."""
        from framework.engine.ddp import unwrap_model
        from framework.evaluation.evaluator import inference_context
        from framework.utils.visualizer import draw_instances, side_by_side

        if not comm.is_main_process():  # only rank 0 writes images
            return
        data: VisualizationData = self.trainer.vis_data
        model = unwrap_model(self.trainer.model)
        for d in list(data.dataset_dicts)[: self.num_images]:
            image, gt = data.load_gt(d)
            with inference_context(model):
                pred = model([data.mapper(d)])[0]["instances"]
            left = draw_instances(image, gt, class_names=data.class_names, colors=data.colors)
            right = draw_instances(
                image, pred, class_names=data.class_names, colors=data.colors, score_thresh=self.score_thresh
            )
            self.trainer.storage.put_image(f"vis/{d['image_id']} (gt | pred)", side_by_side(left, right))
