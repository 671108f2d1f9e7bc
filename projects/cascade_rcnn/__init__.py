"""Cascade R-CNN (Cai & Vasconcelos, CVPR 2018): box stages at IoU 0.5 / 0.6 / 0.7, each refining the last.

Selected as ``model/roi_heads=CascadeROIHeads_quick`` on the default job, or the presets
``model=cascade_mask_rcnn_R_50_FPN`` (detectron2's model, its checkpoints load) and
``model=cascade_mask_rcnn_R_18_FPN_quick``. See README.md.
"""

from projects.cascade_rcnn.roi_heads import CascadeROIHeads
from projects.cascade_rcnn.scale_gradient import scale_gradient

__all__ = ["CascadeROIHeads", "scale_gradient"]
