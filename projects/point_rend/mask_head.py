"""PointRendMaskHead (Kirillov et al., CVPR 2020): a coarse mask, refined at uncertain points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from framework.layers import ShapeSpec, check_feature_names
from framework.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from framework.registry import MASK_HEADS
from framework.structures import Boxes, Instances
from framework.structures.size_checks import known_true

from .coarse_head import CoarseMaskHead
from .point_features import (
    point_sample,
    points_in_image,
    regular_grid_points,
    sample_point_features,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
    uncertainty,
)
from .point_head import StandardPointHead, point_loss
from .point_labels import point_labels

__all__ = ["PointRendMaskHead"]


@MASK_HEADS.register()
class PointRendMaskHead(nn.Module):
    """PointRend's mask head, as detectron2's project defines it; it reads the feature maps
    (select it with ``model.roi_heads.mask_pooler=null``).

    * **Coarse head**: the ``in_features`` maps sampled on a ``pooler_resolution`` grid in each box
      (bilinear at the cell centres, levels concatenated), then :class:`CoarseMaskHead` ->
      (R, K, coarse_side, coarse_side) logits, trained with the Mask R-CNN loss (``loss_mask``).
    * **Point head** (:class:`StandardPointHead`): per point, the ``point_in_features`` maps and the
      coarse logits sampled there -> K logits. Training: ``train_num_points`` points per RoI, drawn
      ``oversample_ratio`` times over uniformly, the ``importance_sample_ratio`` most uncertain kept
      (by the coarse logit of the gt class), the rest uniform; labels are the gt mask at the points;
      ``loss_mask_point`` is their binary cross-entropy.
    * **Inference** (adaptive subdivision): the point head on a regular grid, then
      ``subdivision_steps`` times: upsample x2 (bilinear), recompute the ``subdivision_num_points``
      most uncertain cells. Steps whose points would cover the whole grid are folded into a finer
      start grid (detectron2's shortcut): with the defaults 28x28, then 3 steps to 224x224.
      Only the predicted class's logits are carried between steps (the same masks as carrying all K,
      K times less memory).

    Parameter names are detectron2's (``coarse_head.*``, ``point_head.*``). Knobs (defaults:
    detectron2's PointRend R50-FPN): ``in_features``/``pooler_resolution`` (ROI_MASK_HEAD
    IN_FEATURES / POOLER_RESOLUTION), ``coarse_*`` (CONV_DIM, FC_DIM, NUM_FC,
    OUTPUT_SIDE_RESOLUTION), ``point_*`` and the sampling knobs (POINT_HEAD.*).
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        num_classes: int,
        *,
        in_features: Sequence[str] = ("p2",),
        pooler_resolution: int = 14,
        coarse_conv_dim: int = 256,
        coarse_fc_dim: int = 1024,
        coarse_num_fc: int = 2,
        coarse_side: int = 7,
        point_in_features: Sequence[str] = ("p2",),
        point_fc_dim: int = 256,
        point_num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
        cls_agnostic_mask: bool = False,
        train_num_points: int = 196,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 5,
        subdivision_num_points: int = 784,
    ):
        super().__init__()
        hint = "the head gets the maps of model.roi_heads.mask_in_features"
        self.in_features = check_feature_names(in_features, input_shape, knob="model.roi_heads.mask_head.in_features", hint=hint)
        self.point_in_features = check_feature_names(
            point_in_features, input_shape, knob="model.roi_heads.mask_head.point_in_features", hint=hint
        )
        if not 0.0 <= importance_sample_ratio <= 1.0 or oversample_ratio < 1.0:
            raise ValueError(
                f"PointRendMaskHead: importance_sample_ratio must lie in [0, 1] and oversample_ratio be >= 1, "
                f"got {importance_sample_ratio} and {oversample_ratio}"
            )
        self.strides = {f: input_shape[f].stride for f in input_shape}
        self.pooler_resolution = pooler_resolution
        pooled = ShapeSpec(
            channels=sum(input_shape[f].channels for f in self.in_features), height=pooler_resolution, width=pooler_resolution
        )
        self.coarse_head = CoarseMaskHead(
            pooled, num_classes, conv_dim=coarse_conv_dim, fc_dim=coarse_fc_dim, num_fc=coarse_num_fc, side=coarse_side
        )
        self.point_head = StandardPointHead(
            sum(input_shape[f].channels for f in self.point_in_features),
            num_classes,
            fc_dim=point_fc_dim,
            num_fc=point_num_fc,
            coarse_pred_each_layer=coarse_pred_each_layer,
            cls_agnostic_mask=cls_agnostic_mask,
        )
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_num_points = subdivision_num_points
        self.init_resolution, self.subdivision_steps = coarse_side, subdivision_steps
        while 4 * self.init_resolution**2 <= subdivision_num_points and self.subdivision_steps > 0:
            self.init_resolution *= 2
            self.subdivision_steps -= 1

    def forward(self, features: Mapping[str, torch.Tensor], instances: list[Instances]):
        """Training: ``loss_mask`` (coarse) and ``loss_mask_point``; inference: ``pred_masks``
        (Ri, 1, M, M) probabilities, M = the final subdivision grid (224 by default)."""
        if self.training:
            boxes = [i.proposal_boxes for i in instances]
            coarse = self.coarse_head(self._pool(features, boxes))
            losses = {"loss_mask": mask_rcnn_loss(coarse, instances)}
            classes = _cat_classes(instances, "gt_classes", coarse.device)
            if len(classes) == 0:
                return {**losses, "loss_mask_point": coarse.sum() * 0}
            with torch.no_grad():
                points = uncertain_points_with_randomness(
                    _class_logits(coarse, classes),
                    self.train_num_points,
                    oversample_ratio=self.oversample_ratio,
                    importance_sample_ratio=self.importance_sample_ratio,
                )
                labels = point_labels(instances, points_in_image(Boxes.cat(boxes).tensor, points))
            logits = self._point_logits(features, boxes, points, coarse)
            return {**losses, "loss_mask_point": point_loss(logits, instances, labels)}
        boxes = [i.pred_boxes for i in instances]
        coarse = self.coarse_head(self._pool(features, boxes))
        classes = _cat_classes(instances, "pred_classes", coarse.device)
        # Counts are read as shapes, not with the builtin len: while torch.export records, the number
        # of detections is symbolic; the shortcut is taken only when it is known to be 0 (eager).
        if known_true(classes.shape[0] == 0):
            mask_rcnn_inference(coarse, instances)
            return instances
        mask_rcnn_inference(self._subdivide(features, boxes, coarse, classes), instances)
        return instances

    def _pool(self, features, boxes: Sequence[Boxes]) -> torch.Tensor:
        """(R, C, S, S): ``in_features`` bilinear at the centres of an S x S grid in each box."""
        num = sum(b.tensor.shape[0] for b in boxes)
        grid = regular_grid_points(num, self.pooler_resolution, features[self.in_features[0]].device)
        x = sample_point_features([features[f] for f in self.in_features], [self.strides[f] for f in self.in_features], boxes, grid)
        return x.reshape(num, x.shape[1], self.pooler_resolution, self.pooler_resolution)

    def _point_logits(self, features, boxes, points: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """(R, K or 1, P) point-head logits at box-normalised ``points`` (R, P, 2)."""
        fine = sample_point_features(
            [features[f] for f in self.point_in_features], [self.strides[f] for f in self.point_in_features], boxes, points
        )
        return self.point_head(fine, point_sample(coarse, points))

    def _subdivide(self, features, boxes, coarse: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Adaptive subdivision: (R, 1, M, M) logits of each detection's class."""
        num = classes.shape[0]
        side = self.init_resolution
        logits = _class_logits(self._point_logits(features, boxes, regular_grid_points(num, side, coarse.device), coarse), classes)
        mask = logits.reshape(num, 1, side, side)
        for _ in range(self.subdivision_steps):
            mask = F.interpolate(mask, scale_factor=2, mode="bilinear", align_corners=False)
            idx, points = uncertain_points_on_grid(uncertainty(mask), self.subdivision_num_points)
            logits = _class_logits(self._point_logits(features, boxes, points, coarse), classes)  # (R, 1, P)
            h, w = mask.shape[-2:]
            mask = mask.reshape(num, 1, h * w).scatter(2, idx[:, None], logits.to(mask.dtype)).view(num, 1, h, w)
        return mask


def _cat_classes(instances: Sequence[Instances], name: str, device: torch.device) -> torch.Tensor:
    if not instances:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat([i.get(name) for i in instances]).to(device=device, dtype=torch.long)


def _class_logits(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, K, ...) -> (R, 1, ...) of each row's class; class-agnostic (R, 1, ...) unchanged."""
    if logits.shape[1] == 1:
        return logits
    return logits[torch.arange(classes.shape[0], device=logits.device), classes].unsqueeze(1)
