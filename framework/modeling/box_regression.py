"""The R-CNN box parameterisation (dx, dy, dw, dh) and the dense (per-anchor) box regression loss."""

from __future__ import annotations

import math
from typing import Literal, Sequence, Union

import torch

from framework.errors import did_you_mean
from framework.layers.losses import ciou_loss, diou_loss, giou_loss, smooth_l1_loss
from framework.structures.boxes import Boxes

__all__ = ["Box2BoxTransform", "dense_box_regression_loss", "_dense_box_regression_loss"]

# Clamp dw/dh so that exp() cannot blow up: no prediction may grow a box by more than the factor
# that turns a 16 px anchor into a 1000 px box (detectron2's heuristic).
_DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """The box-to-box transform of R-CNN, parameterised by deltas (dx, dy, dw, dh).

    A box is moved by (dx * width, dy * height) and its sides scaled by (exp(dw), exp(dh)); each delta
    is multiplied by its weight when encoding and divided by it when decoding. Widths are ``x1 - x0``
    (no "+1"), boxes XYXY.

    Args:
        weights: (wx, wy, ww, wh), e.g. (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the box head.
        scale_clamp: upper bound on the decoded dw, dh before ``exp``.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = _DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(
                f"Box2BoxTransform(weights={tuple(weights)}): needs 4 weights (wx, wy, ww, wh), got {len(weights)}"
            )
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas (N, 4) that turn ``src_boxes`` (N, 4) into ``target_boxes`` (N, 4).

        ``apply_deltas(get_deltas(src, tgt), src) == tgt`` up to rounding, unless dw/dh are clamped.

        Raises:
            TypeError: an argument is not a tensor (e.g. a ``Boxes``: pass ``boxes.tensor``).
            ValueError: the shapes are not both (N, 4), or a source box has no positive width and height.
        """
        if not isinstance(src_boxes, torch.Tensor) or not isinstance(target_boxes, torch.Tensor):
            raise TypeError(
                f"Box2BoxTransform.get_deltas(src_boxes, target_boxes) takes two (N, 4) tensors, got "
                f"src_boxes: {type(src_boxes).__name__}, target_boxes: {type(target_boxes).__name__} "
                f"(for a Boxes pass boxes.tensor)"
            )
        if src_boxes.dim() != 2 or src_boxes.shape[1] != 4 or target_boxes.shape != src_boxes.shape:
            raise ValueError(
                f"Box2BoxTransform.get_deltas: src_boxes and target_boxes must both be (N, 4), one target per "
                f"source box, got {tuple(src_boxes.shape)} and {tuple(target_boxes.shape)}"
            )
        src_w = src_boxes[:, 2] - src_boxes[:, 0]
        src_h = src_boxes[:, 3] - src_boxes[:, 1]
        src_cx = src_boxes[:, 0] + 0.5 * src_w
        src_cy = src_boxes[:, 1] + 0.5 * src_h

        tgt_w = target_boxes[:, 2] - target_boxes[:, 0]
        tgt_h = target_boxes[:, 3] - target_boxes[:, 1]
        tgt_cx = target_boxes[:, 0] + 0.5 * tgt_w
        tgt_cy = target_boxes[:, 1] + 0.5 * tgt_h

        wx, wy, ww, wh = self.weights
        dx = wx * (tgt_cx - src_cx) / src_w
        dy = wy * (tgt_cy - src_cy) / src_h
        dw = ww * torch.log(tgt_w / src_w)
        dh = wh * torch.log(tgt_h / src_h)
        deltas = torch.stack((dx, dy, dw, dh), dim=1)
        # deltas are relative to the source box's size: a side <= 0 gives inf/NaN deltas (or flipped ones)
        empty = ~((src_w > 0) & (src_h > 0))
        if bool(empty.any()):
            i = int(torch.nonzero(empty)[0, 0])
            raise ValueError(
                f"Box2BoxTransform.get_deltas: {int(empty.sum())} of {len(src_boxes)} src_boxes have a "
                f"non-positive width or height, e.g. row {i}: {src_boxes[i].tolist()}; every source box needs "
                f"x1 > x0 and y1 > y0"
            )
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (N, k*4) on ``boxes`` (N, 4) into boxes (N, k*4), float32.

        ``deltas[i]`` holds k (e.g. per-class) transformations of the single box ``boxes[i]``.
        """
        deltas = deltas.float()  # decode in fp32 even under autocast: exp() is precision-sensitive
        boxes = boxes.to(deltas.dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x0 = pred_ctr_x - 0.5 * pred_w
        y0 = pred_ctr_y - 0.5 * pred_h
        x1 = pred_ctr_x + 0.5 * pred_w
        y1 = pred_ctr_y + 0.5 * pred_h
        # (N, k, 4) -> (N, k*4): the k boxes of row i stay consecutive, as the deltas were
        return torch.stack((x0, y0, x1, y1), dim=-1).reshape(deltas.shape)


BoxRegLossType = Literal["smooth_l1", "giou", "diou", "ciou"]


def dense_box_regression_loss(
    anchors: Sequence[Union[Boxes, torch.Tensor]],
    box2box_transform: Box2BoxTransform,
    pred_anchor_deltas: Sequence[torch.Tensor],
    gt_boxes: Sequence[torch.Tensor],
    fg_mask: torch.Tensor,
    box_reg_loss_type: BoxRegLossType = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> torch.Tensor:
    """Box regression loss over all anchors of all levels, summed over the foreground ones.

    Args:
        anchors: one per level, Boxes or tensor (Hi*Wi*A, 4); R = sum over levels.
        box2box_transform: encodes targets (smooth_l1) or decodes predictions (IoU losses).
        pred_anchor_deltas: one per level, (N, Hi*Wi*A, 4), N images.
        gt_boxes: one per image, (R, 4): the gt box matched to each anchor.
        fg_mask: (N, R) bool, the anchors that contribute.
        box_reg_loss_type: "smooth_l1" on deltas, or "giou" / "diou" / "ciou" on decoded boxes.
        smooth_l1_beta: smooth-L1 transition point; 0 gives L1.

    Returns:
        Scalar tensor: the sum (not the mean) of the per-anchor losses; the caller normalises.
    """
    if isinstance(anchors[0], Boxes):
        anchors_t = Boxes.cat(list(anchors)).tensor  # (R, 4)
    else:
        anchors_t = torch.cat(list(anchors), dim=0)
    pred = torch.cat(list(pred_anchor_deltas), dim=1)  # (N, R, 4)

    if box_reg_loss_type == "smooth_l1":
        gt_anchor_deltas = torch.stack([box2box_transform.get_deltas(anchors_t, g) for g in gt_boxes])  # (N, R, 4)
        return smooth_l1_loss(pred[fg_mask], gt_anchor_deltas[fg_mask], beta=smooth_l1_beta, reduction="sum")

    iou_losses = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}
    if box_reg_loss_type not in iou_losses:
        raise ValueError(
            f"dense_box_regression_loss: unknown box_reg_loss_type {box_reg_loss_type!r}; valid: 'smooth_l1', "
            f"'giou', 'diou', 'ciou'.{did_you_mean(str(box_reg_loss_type), ['smooth_l1', *iou_losses])}"
        )
    pred_boxes = torch.stack([box2box_transform.apply_deltas(d, anchors_t) for d in pred])  # (N, R, 4)
    return iou_losses[box_reg_loss_type](pred_boxes[fg_mask], torch.stack(list(gt_boxes))[fg_mask], reduction="sum")


#: detectron2's name for :func:`dense_box_regression_loss`, kept so ported code reads the same.
_dense_box_regression_loss = dense_box_regression_loss
