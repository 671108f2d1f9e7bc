"""RoI heads (ROI_HEADS), box heads (BOX_HEADS), box predictors (BOX_PREDICTORS), mask heads (MASK_HEADS),
and the parts RoI-heads variants compose (labelling, branch poolers, the mask branch)."""

from framework.modeling.roi_heads.box_head import FastRCNNConvFCHead
from framework.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from framework.modeling.roi_heads.mask_head import (
    BaseMaskRCNNHead,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from framework.modeling.roi_heads.mask_branch import MaskBranchMixin, build_mask_branch, forward_mask_branch
from framework.modeling.roi_heads.proposal_labeling import (
    label_and_sample_proposals,
    label_proposals,
    log_sample_counts,
    select_foreground_proposals,
)
from framework.modeling.roi_heads.roi_heads import StandardROIHeads
from framework.modeling.roi_heads.roi_pooling import build_branch_pooler

__all__ = [
    "FastRCNNConvFCHead",
    "FastRCNNOutputLayers",
    "fast_rcnn_inference",
    "BaseMaskRCNNHead",
    "MaskRCNNConvUpsampleHead",
    "mask_rcnn_inference",
    "mask_rcnn_loss",
    "StandardROIHeads",
    "MaskBranchMixin",
    "build_branch_pooler",
    "build_mask_branch",
    "forward_mask_branch",
    "label_and_sample_proposals",
    "label_proposals",
    "log_sample_counts",
    "select_foreground_proposals",
]
