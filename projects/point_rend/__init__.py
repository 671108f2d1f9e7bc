"""PointRend (Kirillov, Wu, He, Girshick, CVPR 2020): masks rendered at adaptively chosen points.

Selected as ``model=point_rend_R_18_FPN_quick`` (the default job's model with PointRend's mask
head) or ``model=point_rend_rcnn_R_50_FPN`` (detectron2's). See README.md.
"""

from projects.point_rend.mask_head import PointRendMaskHead

__all__ = ["PointRendMaskHead"]
