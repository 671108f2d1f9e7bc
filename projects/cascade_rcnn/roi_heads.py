"""CascadeROIHeads: Cascade R-CNN's box stages (Cai & Vasconcelos, CVPR 2018), as detectron2 defines them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from framework.errors import ConfigError
from framework.layers import ShapeSpec
from framework.modeling.matcher import Matcher
from framework.modeling.roi_heads import (
    MaskBranchMixin,
    build_branch_pooler,
    label_and_sample_proposals,
    label_proposals,
    log_sample_counts,
)
from framework.registry import BOX_HEADS, BOX_PREDICTORS, MASK_HEADS, ROI_HEADS, ROI_POOLERS, Spec
from framework.structures import Boxes, ImageList, Instances
from framework.utils.events import name_scope

from projects.cascade_rcnn.scale_gradient import scale_gradient

__all__ = ["CascadeROIHeads"]


@ROI_HEADS.register()
class CascadeROIHeads(MaskBranchMixin, nn.Module):
    """Box stages of rising IoU thresholds, each refining the boxes of the one before; then masks.

    Stage 0 pools the (labelled, sampled) RPN proposals; stage k > 0 pools the boxes stage k-1
    regressed (detached, clipped; in training empty ones dropped), labelled again against the gt
    with stage k's IoU threshold and all kept. Every stage has its own box head and predictor,
    with class-agnostic regression and its own box-coding weights, and shares the pooler. In
    training each stage's losses are summed (``loss_cls_stage{k}``, ``loss_box_reg_stage{k}``)
    and the pooled features' gradient is scaled by 1/num_stages, so the backbone sees the mean of
    the stages while each head gets its full gradient. At inference the class probabilities of the
    stages (each on its own input boxes) are averaged and the last stage's boxes kept, then
    thresholded, NMS'd and capped by the last predictor. Masks come from the mask branch as in
    StandardROIHeads: trained on stage 0's sampled foreground, predicted on the final boxes.

    Parameter names are detectron2's (``box_head.{k}.*``, ``box_predictor.{k}.*``,
    ``mask_head.*``), so its Cascade R-CNN checkpoints load unchanged.

    Runtime args: input_shape: ShapeSpec of every backbone output, by name.
    Knobs (defaults: detectron2's Cascade Mask R-CNN R50-FPN):
        num_classes, in_features, batch_size_per_image, positive_fraction, proposal_append_gt,
        box_pooler, box_pooler_resolution, box_head, mask_head, mask_pooler,
        mask_pooler_resolution, mask_in_features: as StandardROIHeads.
        stage_iou_thresholds: foreground IoU of each stage's matcher (stage 0 labels the RPN
            proposals); one stage per entry.
        stage_bbox_reg_weights: (wx, wy, ww, wh) box coding of each stage, one per stage: finer
            stages regress smaller offsets, so larger weights keep their targets at unit scale.
        box_predictor: every stage's predictor; the cascade sets each stage's ``bbox_reg_weights``
            from ``stage_bbox_reg_weights`` and ``cls_agnostic_bbox_reg`` to true (a stage refines
            one box per RoI), the other knobs (loss weights, test thresholds) apply to all stages
            (the test-time ones are the last stage's). A predictor needs ``predict_boxes``,
            ``predict_probs``, ``losses`` and ``select_detections`` (FastRCNNOutputLayers has them).
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        num_classes: int = 80,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        proposal_append_gt: bool = True,
        stage_iou_thresholds: Sequence[float] = (0.5, 0.6, 0.7),
        stage_bbox_reg_weights: Sequence[Sequence[float]] = (
            (10.0, 10.0, 5.0, 5.0),
            (20.0, 20.0, 10.0, 10.0),
            (30.0, 30.0, 15.0, 15.0),
        ),
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
        _check_stages(stage_iou_thresholds, stage_bbox_reg_weights)
        self.num_classes = num_classes
        self.num_stages = len(stage_iou_thresholds)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.proposal_matchers = [Matcher([float(t)], [0, 1], allow_low_quality_matches=False) for t in stage_iou_thresholds]

        self.box_in_features, self.box_pooler, pooled = build_branch_pooler(
            box_pooler, input_shape, in_features, box_pooler_resolution, knob="model.roi_heads.in_features"
        )
        self.box_head = nn.ModuleList(BOX_HEADS.build(box_head, input_shape=pooled) for _ in range(self.num_stages))
        self.box_predictor = nn.ModuleList(
            BOX_PREDICTORS.build(
                _stage_predictor(box_predictor, weights),
                path="model.roi_heads.box_predictor",
                input_shape=head.output_shape,
                num_classes=num_classes,
            )
            for head, weights in zip(self.box_head, stage_bbox_reg_weights)
        )

        self._init_mask_branch(
            input_shape,
            head=mask_head,
            pooler=mask_pooler,
            pooler_resolution=mask_pooler_resolution,
            in_features=mask_in_features or in_features,
        )

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, torch.Tensor],
        proposals: list[Instances],
        targets: Optional[Sequence[Instances]] = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """Same contract as :meth:`StandardROIHeads.forward`: ([], losses) in training, (per image
        Instances with ``pred_boxes``, ``scores``, ``pred_classes`` (+ ``pred_masks``), {}) at inference."""
        del images
        if not self.training:
            instances = self._forward_box(features, proposals)
            return self.forward_with_given_boxes(features, instances), {}
        if targets is None:
            raise ValueError("CascadeROIHeads in training mode needs targets")
        proposals = self._label_and_sample(proposals, targets)
        losses = self._forward_box(features, proposals, targets)
        if self.mask_on:
            losses.update(self._forward_mask(features, proposals))
        return [], losses

    # ------------------------------------------------------------------ stages
    def _label_and_sample(self, proposals: list[Instances], targets: Sequence[Instances]) -> list[Instances]:
        return label_and_sample_proposals(
            proposals,
            targets,
            matcher=self.proposal_matchers[0],
            num_classes=self.num_classes,
            batch_size_per_image=self.batch_size_per_image,
            positive_fraction=self.positive_fraction,
            append_gt=self.proposal_append_gt,
        )

    def _forward_box(self, features, proposals, targets=None):
        """Run the stages. Training: the summed per-stage losses; inference: the detections."""
        feats = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        stage_outputs = []  # (predictions, the proposals they were made on), per stage
        prev_boxes: list[torch.Tensor] = []  # the boxes the last stage regressed, per image
        for k in range(self.num_stages):
            if k > 0:
                proposals = self._proposals_from_boxes(prev_boxes, image_sizes)
                if self.training:
                    proposals, num_fg, num_bg = label_proposals(
                        proposals, targets, matcher=self.proposal_matchers[k], num_classes=self.num_classes
                    )
                    with name_scope(f"stage{k}"):
                        log_sample_counts(num_fg, num_bg)
            x = self.box_pooler(feats, [p.proposal_boxes for p in proposals])
            if self.training:
                x = scale_gradient(x, 1.0 / self.num_stages)
            predictions = self.box_predictor[k](self.box_head[k](x))
            prev_boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            stage_outputs.append((predictions, proposals))

        if self.training:
            losses = {}
            for k, (predictions, stage_proposals) in enumerate(stage_outputs):
                with name_scope(f"stage{k}"):
                    stage_losses = self.box_predictor[k].losses(predictions, stage_proposals)
                losses.update({f"{name}_stage{k}": value for name, value in stage_losses.items()})
            return losses
        probs_per_stage = [self.box_predictor[k].predict_probs(*stage_outputs[k]) for k in range(self.num_stages)]
        scores = [sum(per_image) / self.num_stages for per_image in zip(*probs_per_stage)]
        last = self.box_predictor[-1]
        instances, _ = last.select_detections(last.predict_boxes(*stage_outputs[-1]), scores, image_sizes)
        return instances

    def _proposals_from_boxes(self, boxes: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]]) -> list[Instances]:
        """The next stage's input: (Ri, 4) boxes, detached (no gradient through a box's position, as
        for RPN proposals), clipped; in training empty boxes are dropped. At inference all are kept:
        the stages' scores are averaged per box, so every stage must see the same boxes."""
        out = []
        for b, size in zip(boxes, image_sizes):
            b = Boxes(b.detach())
            b.clip(size)
            if self.training:
                b = b[b.nonempty()]
            out.append(Instances(size, proposal_boxes=b))
        return out


def _check_stages(ious: Sequence[float], weights: Sequence[Sequence[float]]) -> None:
    """One message before anything is built when the per-stage lists disagree."""
    if len(ious) == 0:
        raise ConfigError("model.roi_heads.stage_iou_thresholds is empty; a cascade needs at least one stage")
    if len(weights) != len(ious):
        raise ConfigError(
            f"model.roi_heads.stage_iou_thresholds has {len(ious)} stages {list(ious)} but "
            f"model.roi_heads.stage_bbox_reg_weights has {len(weights)}; give one (wx, wy, ww, wh) per stage"
        )
    for k, w in enumerate(weights):
        if len(w) != 4:
            raise ConfigError(f"model.roi_heads.stage_bbox_reg_weights[{k}] = {list(w)}: expected 4 numbers (wx, wy, ww, wh)")
    for k, t in enumerate(ious):
        if not 0.0 < float(t) < 1.0:
            raise ConfigError(f"model.roi_heads.stage_iou_thresholds[{k}] = {t}: an IoU threshold lies in (0, 1)")


def _stage_predictor(spec: Any, weights: Sequence[float]) -> dict[str, Any]:
    """``spec`` (a name or a mapping) with stage k's box coding and class-agnostic regression."""
    if isinstance(spec, str):
        spec = {"name": spec}
    elif isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    return {**dict(spec), "bbox_reg_weights": [float(w) for w in weights], "cls_agnostic_bbox_reg": True}
