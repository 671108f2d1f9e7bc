"""Fast R-CNN box predictor: class scores + class-specific box deltas, their losses and inference."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from framework.layers import ShapeSpec
from framework.layers.amp import float32_layers
from framework.layers.graph_capture import known_all
from framework.layers.parallel_ops import batched_nms
from framework.modeling.box_regression import Box2BoxTransform, dense_box_regression_loss
from framework.structures import Boxes, Instances, split_by_image
from framework.registry import BOX_PREDICTORS
from framework.utils.events import put_scalars

__all__ = ["FastRCNNOutputLayers", "fast_rcnn_inference"]


def fast_rcnn_inference(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    image_shapes: Sequence[tuple[int, int]],
    *,
    score_thresh: float,
    nms_thresh: float,
    topk_per_image: int,
    min_box_size: float = 0.0,
) -> tuple[list[Instances], list[torch.Tensor]]:
    """Per image: drop scores <= ``score_thresh`` (then boxes with a side < ``min_box_size``, when
    > 0, as torchvision does), per-class NMS, keep the ``topk_per_image`` best.

    Args:
        boxes: per image (R, K*4) or (R, 4) for class-agnostic regression.
        scores: per image (R, K+1) softmax probabilities, background last.
        image_shapes: (h, w) per image, boxes are clipped to it.
    Returns:
        per image Instances(pred_boxes, scores, pred_classes), and the index of the RoI each came from.
    """
    results = [
        _inference_single_image(b, s, shape, score_thresh, nms_thresh, topk_per_image, min_box_size)
        for b, s, shape in zip(boxes, scores, image_shapes)
    ]
    return [r[0] for r in results], [r[1] for r in results]


def _inference_single_image(boxes, scores, image_shape, score_thresh, nms_thresh, topk, min_box_size):
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not known_all(valid):
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]  # drop background
    num_classes = scores.shape[1]  # K: the class ids below are in [0, K)
    num_reg = boxes.shape[1] // 4
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_shape)
    boxes = boxes.tensor.view(-1, num_reg, 4)  # (R, K or 1, 4)
    keep_mask = scores > score_thresh  # (R, K)
    inds = keep_mask.nonzero()  # (M, 2): roi, class
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[keep_mask]
    scores = scores[keep_mask]
    if min_box_size > 0:
        sides = boxes[:, 2:] - boxes[:, :2]
        big = (sides >= min_box_size).all(dim=1)
        boxes, scores, inds = boxes[big], scores[big], inds[big]
    keep = batched_nms(boxes, scores, inds[:, 1], nms_thresh, num_classes=num_classes)
    if topk >= 0:
        keep = keep[:topk]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = inds[keep, 1]
    return result, inds[keep, 0]


@BOX_PREDICTORS.register()
class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on the box-head feature: ``cls_score`` (K+1) and ``bbox_pred`` (K*4 or 4);
    their losses (softmax cross-entropy, box regression) and inference (decode, score threshold,
    per-class NMS, top detections). Input (R, D) -> scores (R, K+1), deltas (R, K*4).

    Runtime args (from the RoI heads): input_shape: the box head's output; num_classes: K.
    Knobs (defaults: detectron2's):
        bbox_reg_weights: (wx, wy, ww, wh) of the box coding (:class:`Box2BoxTransform`).
        cls_agnostic_bbox_reg: one box per RoI instead of one per class.
        smooth_l1_beta, box_reg_loss_type: the regression loss ("smooth_l1" with beta 0 is L1).
        loss_weight_cls, loss_weight_box_reg: multipliers of ``loss_cls`` and ``loss_box_reg``.
        test_score_thresh, test_nms_thresh, test_detections_per_img: inference filtering.
        test_min_box_size: drop detections with a side shorter than this (pixels) before NMS
            (0 = keep all, detectron2; torchvision uses 0.01).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        num_classes: int,
        *,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        cls_agnostic_bbox_reg: bool = False,
        smooth_l1_beta: float = 0.0,
        box_reg_loss_type: Literal["smooth_l1", "giou", "diou", "ciou"] = "smooth_l1",
        loss_weight_cls: float = 1.0,
        loss_weight_box_reg: float = 1.0,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_detections_per_img: int = 100,
        test_min_box_size: float = 0.0,
    ):
        super().__init__()
        input_size = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
        self.num_classes = num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        self.bbox_pred = nn.Linear(input_size, (1 if cls_agnostic_bbox_reg else num_classes) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)
        self.box2box_transform = Box2BoxTransform(weights=tuple(bbox_reg_weights))
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_detections_per_img = test_detections_per_img
        self.test_min_box_size = test_min_box_size
        self.loss_weight = {"loss_cls": loss_weight_cls, "loss_box_reg": loss_weight_box_reg}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, D) or (R, C, H, W) -> scores (R, K+1), deltas (R, K*4)."""
        x = x.flatten(1)
        # float32 under autocast: the losses, score thresholds and box decoding read them
        return float32_layers(x, self.cls_score, self.bbox_pred)

    def losses(self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: Sequence[Instances]) -> dict[str, torch.Tensor]:
        """Softmax cross-entropy over sampled RoIs; box regression on the foreground ones, summed and
        divided by the number of sampled RoIs (detectron2's normalisation).

        ``proposals`` carry ``proposal_boxes``, ``gt_classes`` (K = background) and ``gt_boxes``.
        """
        scores, deltas = predictions
        gt_classes = torch.cat([p.gt_classes for p in proposals]) if proposals else scores.new_zeros(0, dtype=torch.long)
        self._log_accuracy(scores, gt_classes)
        if proposals:
            proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
            gt_boxes = torch.cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals])
        else:
            proposal_boxes = gt_boxes = deltas.new_zeros(0, 4)
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean") if gt_classes.numel() else scores.sum() * 0.0
        losses = {"loss_cls": loss_cls, "loss_box_reg": self.box_reg_loss(proposal_boxes, gt_boxes, deltas, gt_classes)}
        return {k: v * self.loss_weight[k] for k, v in losses.items()}

    def box_reg_loss(self, proposal_boxes, gt_boxes, pred_deltas, gt_classes) -> torch.Tensor:
        """Regression loss of the foreground RoIs, for the deltas of their gt class. Shapes: (R, 4), (R, 4), (R, K*4), (R,)."""
        fg = ((gt_classes >= 0) & (gt_classes < self.num_classes)).nonzero()[:, 0]
        if pred_deltas.shape[1] == 4:
            fg_deltas = pred_deltas[fg]
        else:
            fg_deltas = pred_deltas.view(-1, self.num_classes, 4)[fg, gt_classes[fg]]
        loss = dense_box_regression_loss(
            [proposal_boxes[fg]], self.box2box_transform, [fg_deltas.unsqueeze(0)], [gt_boxes[fg]],
            torch.ones(1, len(fg), dtype=torch.bool, device=pred_deltas.device),
            box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
        )
        return loss / max(gt_classes.numel(), 1.0)

    @staticmethod
    def _log_accuracy(scores: torch.Tensor, gt_classes: torch.Tensor) -> None:
        if gt_classes.numel() == 0:
            return
        num_classes = scores.shape[1] - 1
        pred = scores.argmax(dim=1)
        fg = (gt_classes >= 0) & (gt_classes < num_classes)
        num_fg = fg.sum().item()
        put_scalars(
            **{
                "fast_rcnn/cls_accuracy": (pred == gt_classes).float().mean().item(),
                "fast_rcnn/fg_cls_accuracy": (pred[fg] == gt_classes[fg]).float().mean().item() if num_fg else 0.0,
                "fast_rcnn/false_negative": (pred[fg] == num_classes).float().mean().item() if num_fg else 0.0,
            }
        )

    def predict_boxes(self, predictions, proposals: Sequence[Instances]) -> list[torch.Tensor]:
        """Decoded boxes per image, (Ri, K*4)."""
        if not proposals:
            return []
        _, deltas = predictions
        boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
        pred = self.box2box_transform.apply_deltas(deltas, boxes)
        return split_by_image(pred, proposals)

    def predict_boxes_for_gt_classes(self, predictions, proposals: Sequence[Instances]) -> list[torch.Tensor]:
        """Decoded boxes per image for each proposal's gt class, (Ri, 4); needs ``gt_classes`` on the
        proposals. Background (K) and ignored (-1) are clamped into [0, K-1], as detectron2 does."""
        if not proposals:
            return []
        boxes = torch.cat(self.predict_boxes(predictions, proposals))
        if boxes.shape[1] > 4:
            classes = torch.cat([p.gt_classes for p in proposals]).clamp(0, self.num_classes - 1)
            boxes = boxes.view(-1, self.num_classes, 4)[torch.arange(len(classes), device=boxes.device), classes]
        return split_by_image(boxes, proposals)

    def predict_probs(self, predictions, proposals: Sequence[Instances]) -> list[torch.Tensor]:
        """Softmax class probabilities per image, (Ri, K+1)."""
        scores, _ = predictions
        # float32 softmax: under bf16 autocast the logits are bf16, whose 8-bit mantissa would tie scores
        return split_by_image(F.softmax(scores.float(), dim=-1), proposals)

    def inference(self, predictions, proposals: Sequence[Instances]) -> tuple[list[Instances], list[torch.Tensor]]:
        """Detections of ``predictions`` on ``proposals``: decode, then :meth:`select_detections`."""
        return self.select_detections(
            self.predict_boxes(predictions, proposals),
            self.predict_probs(predictions, proposals),
            [p.image_size for p in proposals],
        )

    def select_detections(
        self, boxes: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], image_shapes: Sequence[tuple[int, int]]
    ) -> tuple[list[Instances], list[torch.Tensor]]:
        """Score threshold, per-class NMS and top-k with this predictor's ``test_*`` knobs, on boxes and
        scores that may come from elsewhere (Cascade R-CNN averages the scores of its stages).

        Args:
            boxes: per image (Ri, K*4) or (Ri, 4) decoded boxes; scores: per image (Ri, K+1) probabilities.
        Returns:
            per image Instances(pred_boxes, scores, pred_classes) and the index of the RoI each came from.
        """
        return fast_rcnn_inference(
            boxes,
            scores,
            image_shapes,
            score_thresh=self.test_score_thresh,
            nms_thresh=self.test_nms_thresh,
            topk_per_image=self.test_detections_per_img,
            min_box_size=self.test_min_box_size,
        )
