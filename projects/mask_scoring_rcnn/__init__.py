"""Mask Scoring R-CNN (Huang et al., CVPR 2019): a MaskIoU head rescores each mask by its predicted IoU.

Selected as ``model/roi_heads=MaskScoringROIHeads`` (or the CPU-sized ``MaskScoringROIHeads_quick``,
or the preset ``model=mask_scoring_rcnn_R_18_FPN_quick``). See README.md.
"""

from projects.mask_scoring_rcnn.maskiou import maskiou_loss, maskiou_rescore
from projects.mask_scoring_rcnn.maskiou_head import MaskIoUHead
from projects.mask_scoring_rcnn.maskiou_targets import mask_iou_on_grid, maskiou_targets
from projects.mask_scoring_rcnn.roi_heads import MaskScoringROIHeads

__all__ = ["MaskIoUHead", "MaskScoringROIHeads", "mask_iou_on_grid", "maskiou_loss", "maskiou_rescore", "maskiou_targets"]
