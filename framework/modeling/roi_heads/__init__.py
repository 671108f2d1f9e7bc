"""RoI heads (ROI_HEADS), box heads (BOX_HEADS), mask heads (MASK_HEADS)."""

from framework.modeling.roi_heads.box_head import FastRCNNConvFCHead
from framework.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from framework.modeling.roi_heads.mask_head import (
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from framework.modeling.roi_heads.roi_heads import StandardROIHeads, select_foreground_proposals

__all__ = [
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "fast_rcnn_inference",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "StandardROIHeads",
    "select_foreground_proposals",
]
