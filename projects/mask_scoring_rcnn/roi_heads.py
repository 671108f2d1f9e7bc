"""MaskScoringROIHeads: Mask R-CNN's RoI heads plus a MaskIoU branch that scores each predicted mask."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.modeling.roi_heads.mask_head import (
    BaseMaskRCNNHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from framework.modeling.roi_heads.proposal_labeling import select_foreground_proposals
from framework.modeling.roi_heads.roi_heads import StandardROIHeads
from framework.registry import ROI_HEADS
from framework.structures import Instances
from framework.utils.events import put_scalars
from projects.mask_scoring_rcnn.maskiou import (
    maskiou_loss,
    maskiou_rescore,
    select_class,
)
from projects.mask_scoring_rcnn.maskiou_head import MaskIoUHead
from projects.mask_scoring_rcnn.maskiou_targets import maskiou_targets

__all__ = ["MaskScoringROIHeads"]
logger = logging.getLogger(__name__)


@ROI_HEADS.register()
class MaskScoringROIHeads(StandardROIHeads):
    """StandardROIHeads whose detections are ranked by ``score * predicted mask IoU`` (Mask Scoring R-CNN).

    Mask R-CNN ranks a mask by its box's classification score, which says nothing about the mask's
    quality. A MaskIoU head reads the mask branch's pooled features (R, C, S, S) and the predicted
    mask of the RoI's class (R, 1, M, M), and regresses that mask's IoU with its gt; at inference
    ``scores`` becomes ``det_scores * mask_iou`` (both kept on the output Instances).

    Every StandardROIHeads knob is inherited. Own knobs (the MaskIoU head is built here, as the box
    predictor is built by StandardROIHeads, so its knobs are these):
        maskiou_num_conv, maskiou_conv_dim, maskiou_num_fc, maskiou_fc_dim: the head (paper: 4
            convs of 256, the last with stride 2; 2 FCs of 1024; then one output per class).
        maskiou_loss_weight: multiplier of ``loss_maskiou`` (1 = the paper).
        maskiou_mask_thresh: probability above which a predicted pixel is foreground for the target.
        maskiou_full_gt_area: the target's gt area is the whole instance's (paper, mmdetection), not
            only the part inside the proposal.

    The mask head must be a :class:`BaseMaskRCNNHead`: its ``layers()`` are called directly because
    the MaskIoU head needs the logits, and its ``loss_weight`` still scales ``loss_mask``. With
    ``mask_head: null`` there is no mask to score and these heads are StandardROIHeads.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        maskiou_num_conv: int = 4,
        maskiou_conv_dim: int = 256,
        maskiou_num_fc: int = 2,
        maskiou_fc_dim: int = 1024,
        maskiou_loss_weight: float = 1.0,
        maskiou_mask_thresh: float = 0.5,
        maskiou_full_gt_area: bool = True,
        **kwargs,
    ):
        super().__init__(input_shape, **kwargs)
        self.maskiou_loss_weight = maskiou_loss_weight
        self.maskiou_mask_thresh = maskiou_mask_thresh
        self.maskiou_full_gt_area = maskiou_full_gt_area
        self.maskiou_head: MaskIoUHead | None = None
        if not self.mask_on:
            logger.info("MaskScoringROIHeads with mask_head=null: no masks to score, no MaskIoU head")
            return
        if not isinstance(self.mask_head, BaseMaskRCNNHead):
            raise ConfigError(
                f"model.roi_heads.mask_head: MaskScoringROIHeads needs a mask head derived from BaseMaskRCNNHead "
                f"(it calls its layers() for the mask logits), got {type(self.mask_head).__name__}"
            )
        if self.mask_pooler is None:
            raise ConfigError(
                "model.roi_heads.mask_pooler: MaskScoringROIHeads scores masks from pooled RoI features; it cannot be null"
            )
        height, width = self.mask_pooler.output_size
        feature = ShapeSpec(channels=input_shape[self.mask_in_features[0]].channels, height=height, width=width)
        self.maskiou_head = MaskIoUHead(
            feature,
            self.num_classes,
            num_conv=maskiou_num_conv,
            conv_dim=maskiou_conv_dim,
            num_fc=maskiou_num_fc,
            fc_dim=maskiou_fc_dim,
        )

    def _forward_mask(self, features, instances):
        """Training: ``loss_mask`` and ``loss_maskiou``; inference: masks and rescored ``scores``."""
        if self.maskiou_head is None:
            return super()._forward_mask(features, instances)
        feats = [features[f] for f in self.mask_in_features]
        if self.training:
            instances = select_foreground_proposals(instances, self.num_classes)
            boxes = [i.proposal_boxes for i in instances]
            classes = _cat_field(instances, "gt_classes")
        else:
            boxes = [i.pred_boxes for i in instances]
            classes = _cat_field(instances, "pred_classes")
        x = self.mask_pooler(feats, boxes)  # (R, C, S, S)
        logits = self.mask_head.layers(x)  # (R, K or 1, M, M)
        class_logits = select_class(logits, classes)  # (R, M, M)
        pred_iou = select_class(self.maskiou_head(x, class_logits[:, None]), classes)  # (R,)
        if self.training:
            targets = maskiou_targets(
                class_logits, instances, mask_thresh=self.maskiou_mask_thresh, full_gt_area=self.maskiou_full_gt_area
            )
            if targets.numel():
                put_scalars(
                    **{
                        "mask_scoring/maskiou_target": targets.mean().item(),
                        "mask_scoring/maskiou_abs_error": (pred_iou.detach() - targets).abs().mean().item(),
                    }
                )
            return {
                "loss_mask": mask_rcnn_loss(logits, instances) * self.mask_head.loss_weight,
                "loss_maskiou": maskiou_loss(pred_iou, targets) * self.maskiou_loss_weight,
            }
        mask_rcnn_inference(logits, instances)
        maskiou_rescore(pred_iou, instances)
        return instances


def _cat_field(instances: list[Instances], name: str) -> torch.Tensor:
    """One (R,) int64 tensor of a per-image class field."""
    if not instances:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([i.get(name) for i in instances]).to(torch.long)
