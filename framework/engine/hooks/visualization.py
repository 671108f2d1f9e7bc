"""VisualizationHook: ground truth beside predictions for a few fixed validation images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from torch import nn

from framework.engine.hooks.base import HOOKS, Hook, Priority, TrainLoop
from framework.errors import ConfigError
from framework.utils import comm

__all__ = ["VisualizationHook", "VisualizationData"]

logger = logging.getLogger(__name__)


@dataclass
class VisualizationData:
    """What the hook draws: the run's builder offers it to hooks as ``vis_data``.

    Attributes:
        dataset_dicts: the validation dataset dicts; the first ``num_images`` are drawn.
        mapper: the test-time mapper (dataset dict -> model input).
        class_names, colors: from the dataset metadata.
        load_gt: ``dataset_dict -> (image (3, H, W) uint8 RGB, gt Instances at that size)``; it
            raises one of ``skip_errors`` for an image that cannot be read.
        skip_errors: errors of an unreadable image, which is then left out with a warning (the
            next validation image takes its place); empty: such an error stops the run.
    """

    dataset_dicts: Sequence[dict]
    mapper: Callable[[dict], dict]
    class_names: Sequence[str]
    colors: Sequence[tuple[int, int, int]]
    load_gt: Callable[[dict], tuple[torch.Tensor, Any]]
    skip_errors: tuple[type[BaseException], ...] = ()


@HOOKS.register()
class VisualizationHook(Hook):
    """Put ``vis/<image id>`` images (ground truth | predictions) in the event storage for TensorBoard.

    Runs every ``period`` steps and after the last one (``0``: only after the last), after the
    evaluation of the same step.

    Args:
        model: the model being trained (the plain module; run in eval mode here).
        vis_data: the validation images and how to draw them (:class:`VisualizationData`).
        num_images: how many validation images (always the same ones, so runs compare).
        score_thresh: predictions below this score are not drawn.
    """

    priority = Priority.LOW + 5

    def __init__(
        self,
        model: nn.Module,
        vis_data: VisualizationData,
        *,
        period: int = 0,
        num_images: int = 4,
        score_thresh: float = 0.5,
    ) -> None:
        if period < 0 or num_images < 0:
            raise ConfigError(f"VisualizationHook: period and num_images must be >= 0, got {period}, {num_images}")
        self.model = model
        self.vis_data = vis_data
        self.period = period
        self.num_images = num_images
        self.score_thresh = score_thresh

    def after_step(self, loop: TrainLoop) -> None:
        next_iter = loop.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter != loop.max_iter:
            self.visualize(loop)

    def after_train(self, loop: TrainLoop) -> None:
        if loop.iter >= loop.max_iter:
            self.visualize(loop)

    @torch.no_grad()
    def visualize(self, loop: TrainLoop) -> None:
        """Run the model on the fixed images and put one side-by-side image per input."""
        from framework.evaluation.evaluator import inference_context
        from framework.utils.visualizer import draw_instances, side_by_side

        if not comm.is_main_process():  # only rank 0 writes images
            return
        data = self.vis_data
        drawn = 0
        for d in data.dataset_dicts:
            if drawn == self.num_images:
                break
            try:
                image, gt = data.load_gt(d)
                inputs = data.mapper(d)
            except data.skip_errors as e:
                logger.warning(f"VisualizationHook: left out an unreadable validation image: {e}")
                continue
            with inference_context(self.model):
                pred = self.model([inputs])[0]["instances"]
            left = draw_instances(image, gt, class_names=data.class_names, colors=data.colors)
            right = draw_instances(
                image, pred, class_names=data.class_names, colors=data.colors, score_thresh=self.score_thresh
            )
            loop.storage.put_image(f"vis/{d['image_id']} (gt | pred)", side_by_side(left, right))
            drawn += 1
