"""StandardROIHeads: sample proposals, pool RoI features, run the box and (optional) mask branch."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from framework.layers import ShapeSpec, check_feature_names
from framework.modeling.matcher import Matcher
from framework.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from framework.modeling.sampling import subsample_labels
from framework.registry import BOX_HEADS, BOX_PREDICTORS, MASK_HEADS, ROI_HEADS, ROI_POOLERS, Spec
from framework.structures import ImageList, Instances, pairwise_iou
from framework.utils.events import put_scalars

__all__ = ["StandardROIHeads", "select_foreground_proposals"]


def select_foreground_proposals(proposals: Sequence[Instances], bg_label: int) -> list[Instances]:
    """Per image, the proposals whose ``gt_classes`` is a real class (not background, not ignored)."""
    return [p[(p.gt_classes != -1) & (p.gt_classes != bg_label)] for p in proposals]


@ROI_HEADS.register()
class StandardROIHeads(nn.Module):
    """The RoI heads of Faster / Mask R-CNN: a box branch and an optional mask branch sharing proposals.

    Runtime args: input_shape: ShapeSpec of every backbone output, by name.
    Knobs (defaults: detectron2's Mask R-CNN R50-FPN):
        num_classes: foreground classes K (background is index K).
        in_features: feature maps the box branch pools from (and the mask branch, unless
            ``mask_in_features`` is set).
        batch_size_per_image, positive_fraction: RoIs sampled per image for the losses.
        iou_thresholds, iou_labels: proposal/gt matching (IoU >= 0.5 foreground).
        proposal_append_gt: add gt boxes to the proposals in training.
        box_pooler, box_pooler_resolution, box_head: the box branch's pooler and head.
        box_predictor: class scores and box deltas from the box head's feature, their losses and
            inference (a BOX_PREDICTORS component with its own knobs: box coding, regression loss,
            loss weights, test-time thresholds; ``model.roi_heads.box_predictor.test_score_thresh``).
        mask_head, mask_pooler, mask_pooler_resolution, mask_in_features: the mask branch
            (``mask_head: null`` gives Faster R-CNN).
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
        box_pooler: Spec[ROI_POOLERS] = "ROIAlignV2",
        box_pooler_resolution: int = 7,
        box_head: Spec[BOX_HEADS] = "FastRCNNConvFCHead",
        box_predictor: Spec[BOX_PREDICTORS] = "FastRCNNOutputLayers",
        mask_head: Optional[Spec[MASK_HEADS]] = None,
        mask_pooler: Spec[ROI_POOLERS] = "ROIAlignV2",
        mask_pooler_resolution: int = 14,
        mask_in_features: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.proposal_matcher = Matcher(list(iou_thresholds), list(iou_labels), allow_low_quality_matches=False)

        self.box_in_features = check_feature_names(in_features, input_shape, knob="StandardROIHeads.in_features")
        channels = self._channels(self.box_in_features, input_shape)
        scales = [1.0 / input_shape[f].stride for f in self.box_in_features]
        self.box_pooler = ROI_POOLERS.build(box_pooler, output_size=box_pooler_resolution, scales=scales)
        self.box_head = BOX_HEADS.build(
            box_head, input_shape=ShapeSpec(channels=channels, height=box_pooler_resolution, width=box_pooler_resolution)
        )
        self.box_predictor = BOX_PREDICTORS.build(
            box_predictor, input_shape=self.box_head.output_shape, num_classes=num_classes
        )

        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_in_features = check_feature_names(
                mask_in_features or in_features, input_shape, knob="StandardROIHeads.mask_in_features"
            )
            channels = self._channels(self.mask_in_features, input_shape)
            scales = [1.0 / input_shape[f].stride for f in self.mask_in_features]
            self.mask_pooler = ROI_POOLERS.build(mask_pooler, output_size=mask_pooler_resolution, scales=scales)
            self.mask_head = MASK_HEADS.build(
                mask_head,
                input_shape=ShapeSpec(channels=channels, height=mask_pooler_resolution, width=mask_pooler_resolution),
                num_classes=num_classes,
            )

    @property
    def output_fields(self) -> tuple[str, ...]:
        """The fields of the ``Instances`` this module predicts at inference (what evaluators and
        exporters can expect): boxes, scores and classes, plus ``pred_masks`` with a mask head."""
        return ("pred_boxes", "scores", "pred_classes", *(("pred_masks",) if self.mask_on else ()))

    @staticmethod
    def _channels(names: Sequence[str], input_shape: Mapping[str, ShapeSpec]) -> int:
        channels = {input_shape[f].channels for f in names}
        if len(channels) != 1:
            raise ValueError(f"StandardROIHeads: features {list(names)} have different channels {sorted(channels)}")
        return channels.pop()

    # ------------------------------------------------------------------ training targets
    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: list[Instances], targets: Sequence[Instances]) -> list[Instances]:
        """Match proposals to gt (IoU), sample ``batch_size_per_image`` at ``positive_fraction``.

        Returns per image the sampled proposals with ``gt_classes`` (K for background) and, for
        images with gt, every ``gt_*`` field of their matched gt (``gt_boxes``, ``gt_masks``).
        """
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        sampled, num_fg, num_bg = [], [], []
        for props, gt in zip(proposals, targets):
            has_gt = len(gt) > 0
            iou = pairwise_iou(gt.gt_boxes, props.proposal_boxes)
            matched_idxs, matched_labels = self.proposal_matcher(iou)
            if has_gt:
                gt_classes = gt.gt_classes[matched_idxs]
                gt_classes[matched_labels == 0] = self.num_classes
                gt_classes[matched_labels == -1] = -1
            else:
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
            fg_idx, bg_idx = subsample_labels(gt_classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
            idx = torch.cat([fg_idx, bg_idx])
            props = props[idx]
            props.gt_classes = gt_classes[idx]
            if has_gt:
                matched = matched_idxs[idx]
                for name, value in gt.get_fields().items():
                    if name.startswith("gt_") and not props.has(name):
                        props.set(name, value[matched])
            num_fg.append(len(fg_idx))
            num_bg.append(len(bg_idx))
            sampled.append(props)
        put_scalars(
            **{
                "roi_head/num_fg_samples": sum(num_fg) / max(len(num_fg), 1),
                "roi_head/num_bg_samples": sum(num_bg) / max(len(num_bg), 1),
            }
        )
        return sampled

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
        instances = self._forward_box(features, proposals)
        if self.mask_on:
            instances = self._forward_mask(features, instances)
        return instances, {}

    def forward_with_given_boxes(self, features: Mapping[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """Inference of the non-box branches (masks) on final detections."""
        if self.mask_on:
            instances = self._forward_mask(features, instances)
        return instances

    def _forward_box(self, features, proposals):
        feats = [features[f] for f in self.box_in_features]
        x = self.box_pooler(feats, [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(x))
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        instances, _ = self.box_predictor.inference(predictions, proposals)
        return instances

    def _forward_mask(self, features, instances):
        """Mask losses (training) or ``pred_masks`` (inference). The pooled features keep the
        features' memory format (GeneralizedRCNN.channels_last): NHWC is the mask head's faster layout."""
        feats = [features[f] for f in self.mask_in_features]
        if self.training:
            instances = select_foreground_proposals(instances, self.num_classes)
            boxes = [i.proposal_boxes for i in instances]
        else:
            boxes = [i.pred_boxes for i in instances]
        return self.mask_head(self.mask_pooler(feats, boxes), instances)
