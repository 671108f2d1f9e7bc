"""StandardROIHeads: label and sample proposals, then the box branch and an optional mask branch.

Composed of parts a variant reuses (Cascade R-CNN in projects/cascade_rcnn does): the training
targets (:mod:`.proposal_labeling`), a branch's pooler (:mod:`.roi_pooling`) and the mask branch
(:mod:`.mask_branch`); the box branch is the pooler, the box head and the box predictor.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from framework.layers import ShapeSpec
from framework.modeling.matcher import Matcher
from framework.registry import BOX_HEADS, BOX_PREDICTORS, MASK_HEADS, ROI_HEADS, ROI_POOLERS, Spec
from framework.structures import Boxes, ImageList, Instances

from .mask_branch import MaskBranchMixin
from .proposal_labeling import label_and_sample_proposals, select_foreground_proposals
from .roi_pooling import build_branch_pooler

__all__ = ["StandardROIHeads", "select_foreground_proposals"]


@ROI_HEADS.register()
class StandardROIHeads(MaskBranchMixin, nn.Module):
    """The RoI heads of Faster / Mask R-CNN: a box branch and an optional mask branch sharing proposals.

    Runtime args: input_shape: ShapeSpec of every backbone output, by name.
    Knobs (defaults: detectron2's Mask R-CNN R50-FPN):
        num_classes: foreground classes K (background is index K).
        in_features: feature maps the box branch pools from (and the mask branch, unless
            ``mask_in_features`` is set).
        batch_size_per_image, positive_fraction: RoIs sampled per image for the losses.
        iou_thresholds, iou_labels: proposal/gt matching (IoU >= 0.5 foreground).
        proposal_append_gt: add gt boxes to the proposals in training.
        train_on_pred_boxes: in training, the mask branch gets the box branch's regressed boxes
            (for the gt class, no gradient) instead of the proposals (detectron2's
            ``TRAIN_ON_PRED_BOXES``, which PointRend uses).
        box_pooler, box_pooler_resolution, box_head: the box branch's pooler and head.
        box_predictor: class scores and box deltas from the box head's feature, their losses and
            inference (a BOX_PREDICTORS component with its own knobs: box coding, regression loss,
            loss weights, test-time thresholds; ``model.roi_heads.box_predictor.test_score_thresh``).
        mask_head, mask_pooler, mask_pooler_resolution, mask_in_features: the mask branch
            (``mask_head: null`` gives Faster R-CNN; ``mask_pooler: null`` hands the head the
            feature maps instead of pooled features, see :mod:`.mask_branch`).
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        num_classes: int = 80,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou_thresholds: Sequence[float] = (0.5,),
        iou_labels: Sequence[int] = (0, 1),
        proposal_append_gt: bool = True,
        train_on_pred_boxes: bool = False,
        box_pooler: Spec[ROI_POOLERS] = "ROIAlignV2",
        box_pooler_resolution: int = 7,
        box_head: Spec[BOX_HEADS] = "FastRCNNConvFCHead",
        box_predictor: Spec[BOX_PREDICTORS] = "FastRCNNOutputLayers",
        mask_head: Optional[Spec[MASK_HEADS]] = None,
        mask_pooler: Optional[Spec[ROI_POOLERS]] = "ROIAlignV2",
        mask_pooler_resolution: int = 14,
        mask_in_features: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.train_on_pred_boxes = train_on_pred_boxes
        self.proposal_matcher = Matcher(list(iou_thresholds), list(iou_labels), allow_low_quality_matches=False)

        self.box_in_features, self.box_pooler, pooled = build_branch_pooler(
            box_pooler, input_shape, in_features, box_pooler_resolution, knob="model.roi_heads.in_features"
        )
        self.box_head = BOX_HEADS.build(box_head, input_shape=pooled)
        self.box_predictor = BOX_PREDICTORS.build(
            box_predictor, input_shape=self.box_head.output_shape, num_classes=num_classes
        )

        self._init_mask_branch(
            input_shape,
            head=mask_head,
            pooler=mask_pooler,
            pooler_resolution=mask_pooler_resolution,
            in_features=mask_in_features or in_features,
        )

    # ------------------------------------------------------------------ training targets
    def label_and_sample_proposals(self, proposals: list[Instances], targets: Sequence[Instances]) -> list[Instances]:
        """Match proposals to gt (IoU), sample ``batch_size_per_image`` at ``positive_fraction``
        (:func:`.proposal_labeling.label_and_sample_proposals`)."""
        return label_and_sample_proposals(
            proposals,
            targets,
            matcher=self.proposal_matcher,
            num_classes=self.num_classes,
            batch_size_per_image=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            append_gt=self.proposal_append_gt,
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: ImageList,
        features: Mapping[str, torch.Tensor],
        proposals: list[Instances],
        targets: Optional[Sequence[Instances]] = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """
        Args:
            images: the padded batch (unused; kept for heads that need it).
            features: backbone outputs by name.
            proposals: per image Instances with ``proposal_boxes`` (and ``objectness_logits``).
            targets: per image gt Instances (``gt_boxes``, ``gt_classes``, ``gt_masks``); training only.
        Returns:
            training: ([], losses); inference: (per image Instances with ``pred_boxes``, ``scores``,
            ``pred_classes`` and, with a mask head, ``pred_masks`` (Ri, 1, M, M) probabilities), {}).
        """
        del images
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads in training mode needs targets")
            proposals = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(features, proposals)
            if self.mask_on:
                losses.update(self._forward_mask(features, proposals))
            return [], losses
        return self.forward_with_given_boxes(features, self._forward_box(features, proposals)), {}

    def _forward_box(self, features, proposals):
        feats = [features[f] for f in self.box_in_features]
        x = self.box_pooler(feats, [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(x))
        if self.training:
            losses = self.box_predictor.losses(predictions, proposals)
            if self.train_on_pred_boxes:  # the mask branch, next, then pools the regressed boxes
                with torch.no_grad():
                    for p, boxes in zip(proposals, self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)):
                        p.proposal_boxes = Boxes(boxes)
            return losses
        instances, _ = self.box_predictor.inference(predictions, proposals)
        return instances
