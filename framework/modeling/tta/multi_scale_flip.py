"""MultiScaleFlip: detectron2's ``GeneralizedRCNNWithTTA`` for any model with the interface of
:mod:`.model_interface`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Iterator, Optional

import torch
from torch import nn

from framework.errors import ConfigError
from framework.registry import TEST_TIME_AUGMENTATIONS
from framework.structures import Boxes, Instances

from .merge import average_over_views, merge_detections
from .model_interface import check_tta_model
from .views import View, boxes_to_original, boxes_to_view, make_views, view_image

__all__ = ["MultiScaleFlip"]


@TEST_TIME_AUGMENTATIONS.register()
class MultiScaleFlip(nn.Module):
    """Detections of each test image over several sizes and their mirrors, merged (detectron2's
    ``GeneralizedRCNNWithTTA`` with ``DatasetMapperTTA``).

    Per image: each view (the model's input resized to a shorter side of each ``min_sizes``, the
    longer one at most ``max_size``; with ``flip`` also mirrored) is detected with the mask
    branch off; the boxes are mapped back to the original image and merged by per-class NMS
    (:func:`.merge.merge_detections`); then the mask branch runs in every view on the merged boxes
    (mapped into that view) and the mask probabilities are averaged (:func:`.merge.average_over_views`)
    before they are pasted with the model's threshold. Box-only models skip the mask pass.

    Cost: ``len(min_sizes) * (2 if flip else 1)`` views, each through the backbone twice (once for
    boxes, once for masks, as detectron2 does: keeping every view's features would hold them all
    in memory at once), at sizes up to ``max_size``.

    Runtime args: model: the model to wrap (see :mod:`.model_interface`).
    Knobs (defaults: detectron2's ``TEST.AUG``; its ``ROI_HEADS.NMS_THRESH_TEST`` and
    ``TEST.DETECTIONS_PER_IMAGE`` for the merge):
        min_sizes: shorter-side sizes of the views (0: the input's size).
        max_size: upper bound on the longer side of a view.
        flip: add the mirror of every resized view.
        nms_thresh: IoU of the per-class NMS over all views' detections (as the model's
            ``test_nms_thresh``, which detectron2 reuses here).
        detections_per_image: detections kept after the merge (as the model's ``test_detections_per_img``).
        batch_size: views run through the model together (detectron2: 3, faster on a GPU; padding
            the batch to its largest view changes the features near the borders of the smaller
            ones slightly, so with 1, the default, a view's detections are those of plain inference
            at its size).

    Input and output: as the wrapped model's ``forward`` at inference: a list of dicts with
    ``image`` (C, H, W) and ``height``/``width`` (the original size; default the image's) ->
    per image ``{"instances": Instances}`` at (height, width).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_sizes: Sequence[int] = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
        max_size: int = 4000,
        flip: bool = True,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        who = type(self).__name__
        sizes = list(min_sizes)
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sizes):
            raise ConfigError(f"config path 'tta.min_sizes': {who} needs a non-empty list of shorter-side sizes "
                              f"(ints >= 0; 0 keeps the input's size), got {min_sizes!r}")
        for key, value in (("max_size", max_size), ("detections_per_image", detections_per_image),
                           ("batch_size", batch_size)):
            if value <= 0:
                raise ConfigError(f"config path 'tta.{key}': must be > 0, got {value}")
        if not 0.0 < nms_thresh <= 1.0:
            raise ConfigError(f"config path 'tta.nms_thresh': an IoU in (0, 1], got {nms_thresh}")
        self.mask_on = "pred_masks" in check_tta_model(model, who=who)
        self.model = model
        self.min_sizes = tuple(sizes)
        self.max_size = max_size
        self.flip = flip
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.batch_size = batch_size

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> list[dict[str, Instances]]:
        if self.training:
            raise RuntimeError(f"{type(self).__name__} is for inference: call .eval() first")
        return [{"instances": self._inference_one(x)} for x in batched_inputs]

    def _inference_one(self, x: dict[str, Any]) -> Instances:
        image = x["image"]
        in_h, in_w = int(image.shape[-2]), int(image.shape[-1])
        original = (int(x.get("height", in_h)), int(x.get("width", in_w)))
        views = make_views(in_h, in_w, min_sizes=self.min_sizes, max_size=self.max_size, flip=self.flip)
        inputs = [{**x, "image": view_image(image, v)} for v in views]

        with self._mask_branch_off():
            detections = self._batch_inference(inputs)
        for d, v in zip(detections, views):
            if tuple(d.image_size) != v.size:
                raise RuntimeError(f"{type(self).__name__}: the model detected on an image of size {tuple(d.image_size)} "
                                   f"for a view of size {v.size}: it resizes images itself, which undoes the views")
        boxes = [boxes_to_original(d.pred_boxes.tensor, v, original) for d, v in zip(detections, views)]
        merged = merge_detections(
            torch.cat(boxes), torch.cat([d.scores for d in detections]), torch.cat([d.pred_classes for d in detections]),
            original, nms_thresh=self.nms_thresh, max_detections=self.detections_per_image,
        )
        if self.mask_on:
            given = [self._in_view(merged, v, original) for v in views]
            merged = average_over_views(self._batch_inference(inputs, given), views, merged)
        return self.model.postprocess(merged, *original)

    @staticmethod
    def _in_view(merged: Instances, view: View, original: tuple[int, int]) -> Instances:
        """The merged detections mapped into ``view``, for its mask pass."""
        return Instances(view.size, pred_boxes=Boxes(boxes_to_view(merged.pred_boxes.tensor, view, original)),
                         pred_classes=merged.pred_classes, scores=merged.scores)

    def _batch_inference(self, inputs: list[dict[str, Any]], given: Optional[list[Instances]] = None) -> list[Instances]:
        """The model's detections (at each input's size) in batches of ``batch_size``."""
        out: list[Instances] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            out.extend(self.model.inference(inputs[chunk], do_postprocess=False,
                                            detected_instances=None if given is None else given[chunk]))
        return out

    @contextlib.contextmanager
    def _mask_branch_off(self) -> Iterator[None]:
        """The model's mask branch switched off (``roi_heads.mask_on``, when it has one) for the box pass."""
        heads = getattr(self.model, "roi_heads", None)
        if not self.mask_on or not getattr(heads, "mask_on", False):
            yield
            return
        heads.mask_on = False
        try:
            yield
        finally:
            heads.mask_on = True
