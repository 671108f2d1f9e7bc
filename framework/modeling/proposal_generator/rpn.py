"""Region Proposal Network (Faster R-CNN), with detectron2's labelling, sampling and loss normalisation."""

from __future__ import annotations

from typing import Literal, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from framework.layers import ShapeSpec, check_feature_names
from framework.modeling.box_regression import Box2BoxTransform, dense_box_regression_loss
from framework.modeling.matcher import Matcher
from framework.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from framework.modeling.sampling import subsample_labels
from framework.registry import ANCHOR_GENERATORS, PROPOSAL_GENERATORS, RPN_HEADS, Spec
from framework.structures import Boxes, ImageList, Instances, pairwise_iou
from framework.utils.events import put_scalars

__all__ = ["RPN"]


@PROPOSAL_GENERATORS.register()
class RPN(nn.Module):
    """Region Proposal Network: dense objectness + box deltas over anchors, then top-k and NMS.

    Runtime args (from the meta-architecture):
        input_shape: ShapeSpec of every backbone output, by name.
    Knobs (defaults are detectron2's for R50-FPN):
        in_features: backbone outputs to use, finest first.
        anchor_generator, head: nested components.
        iou_thresholds, iou_labels: anchor labelling; < 0.3 background (0), >= 0.7 foreground (1),
            in between ignored (-1); every gt also claims its best anchor(s) (low-quality matches).
        batch_size_per_image, positive_fraction: anchors sampled per image for the losses.
        pre_nms_topk_*: boxes kept per level before NMS; post_nms_topk_*: kept per image after it.
        nms_thresh, min_box_size: NMS IoU and the minimum side of a proposal (pixels).
        anchor_boundary_thresh: ignore anchors more than this many pixels outside the image (-1: keep all).
        bbox_reg_weights, smooth_l1_beta, box_reg_loss_type: box encoding and regression loss.
        loss_weight_cls, loss_weight_loc: multipliers of loss_rpn_cls and loss_rpn_loc.
    """

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        anchor_generator: Spec[ANCHOR_GENERATORS] = "DefaultAnchorGenerator",
        head: Spec[RPN_HEADS] = "StandardRPNHead",
        iou_thresholds: Sequence[float] = (0.3, 0.7),
        iou_labels: Sequence[int] = (0, -1, 1),
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 1000,
        post_nms_topk_test: int = 1000,
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        anchor_boundary_thresh: float = -1.0,
        bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: Literal["smooth_l1", "giou", "diou", "ciou"] = "smooth_l1",
        loss_weight_cls: float = 1.0,
        loss_weight_loc: float = 1.0,
    ):
        super().__init__()
        self.in_features = check_feature_names(in_features, input_shape, knob="RPN.in_features")
        shapes = [input_shape[f] for f in self.in_features]
        self.anchor_generator = ANCHOR_GENERATORS.build(anchor_generator, input_shape=shapes)
        num_anchors = set(self.anchor_generator.num_anchors)
        if len(num_anchors) != 1:
            raise ValueError(f"RPN needs the same number of anchors per location on every level, got {num_anchors}")
        self.rpn_head = RPN_HEADS.build(head, input_shape=shapes, num_anchors=num_anchors.pop(), box_dim=self.anchor_generator.box_dim)
        self.anchor_matcher = Matcher(list(iou_thresholds), list(iou_labels), allow_low_quality_matches=True)
        self.box2box_transform = Box2BoxTransform(weights=tuple(bbox_reg_weights))
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.anchor_boundary_thresh = anchor_boundary_thresh
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.loss_weight = {"loss_rpn_cls": loss_weight_cls, "loss_rpn_loc": loss_weight_loc}

    # ------------------------------------------------------------------ training targets
    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: list[Boxes], gt_instances: Sequence[Instances]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """
        Returns:
            gt_labels: per image (R,) in {-1 ignore, 0 background, 1 foreground}, R = all anchors;
                only ``batch_size_per_image`` of them are 0 or 1.
            matched_gt_boxes: per image (R, 4), the gt box of each anchor (zeros without gt).
        """
        anchors_all = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for inst in gt_instances:
            gt_boxes = inst.gt_boxes
            iou = pairwise_iou(gt_boxes, anchors_all)  # (G, R)
            matched_idxs, labels = self.anchor_matcher(iou)
            labels = labels.to(dtype=torch.int64)
            if self.anchor_boundary_thresh >= 0:
                inside = anchors_all.inside_box(inst.image_size, self.anchor_boundary_thresh)
                labels[~inside] = -1
            pos, neg = subsample_labels(labels, self.batch_size_per_image, self.positive_fraction, 0)
            labels.fill_(-1)
            labels.scatter_(0, pos, 1)
            labels.scatter_(0, neg, 0)
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(anchors_all.tensor)
            else:
                matched = gt_boxes.tensor[matched_idxs]
            gt_labels.append(labels)
            matched_gt_boxes.append(matched)
        return gt_labels, matched_gt_boxes

    def losses(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Objectness BCE and box regression, both summed over sampled anchors and divided by
        ``batch_size_per_image * num_images`` (detectron2's normalisation).

        Args:
            pred_objectness_logits: per level (N, Hi*Wi*A); pred_anchor_deltas: per level (N, Hi*Wi*A, 4).
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = labels == 1
        put_scalars(
            **{
                "rpn/num_pos_anchors": pos_mask.sum().item() / num_images,
                "rpn/num_neg_anchors": (labels == 0).sum().item() / num_images,
            }
        )
        loc = dense_box_regression_loss(
            anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
            box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
        )
        valid = labels >= 0
        cls = F.binary_cross_entropy_with_logits(
            torch.cat(pred_objectness_logits, dim=1)[valid], labels[valid].to(torch.float32), reduction="sum"
        )
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": cls / normalizer, "loss_rpn_loc": loc / normalizer}
        return {k: v * self.loss_weight[k] for k, v in losses.items()}

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: ImageList,
        features: Mapping[str, torch.Tensor],
        gt_instances: Optional[Sequence[Instances]] = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """
        Args:
            images: the padded batch (only ``image_sizes`` is used).
            features: backbone outputs by name, (N, C, Hi, Wi).
            gt_instances: per image, with ``gt_boxes``; required in training.
        Returns:
            proposals: per image Instances(proposal_boxes, objectness_logits), at most post_nms_topk.
            losses: ``loss_rpn_cls``, ``loss_rpn_loc`` in training, else empty.
        """
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator(feats)
        logits, deltas = self.rpn_head(feats)
        # (N, A, H, W) -> (N, H*W*A): the (y, x, anchor) order of the anchors
        logits = [x.permute(0, 2, 3, 1).flatten(1) for x in logits]
        deltas = [
            x.view(x.shape[0], -1, self.anchor_generator.box_dim, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for x in deltas
        ]
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN in training mode needs gt_instances")
            gt_labels, gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)
        proposals = self.predict_proposals(anchors, logits, deltas, images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def predict_proposals(
        self,
        anchors: list[Boxes],
        pred_objectness_logits: list[torch.Tensor],
        pred_anchor_deltas: list[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Decode deltas into boxes and select proposals (no gradient flows into the RoI heads)."""
        proposals = []
        for anchors_l, deltas_l in zip(anchors, pred_anchor_deltas):
            n, r, b = deltas_l.shape
            a = anchors_l.tensor.unsqueeze(0).expand(n, -1, -1).reshape(-1, b)
            proposals.append(self.box2box_transform.apply_deltas(deltas_l.reshape(-1, b), a).view(n, -1, b))
        return find_top_rpn_proposals(
            proposals,
            pred_objectness_logits,
            image_sizes,
            nms_thresh=self.nms_thresh,
            pre_nms_topk=self.pre_nms_topk[self.training],
            post_nms_topk=self.post_nms_topk[self.training],
            min_box_size=self.min_box_size,
            training=self.training,
            level_names=self.in_features,
        )
