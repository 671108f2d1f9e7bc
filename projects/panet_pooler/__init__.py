"""PANet's adaptive feature pooling as an RoI pooler: ``model/roi_pooler=PANetPooler``.

Liu, Qi, Qin, Shi, Jia, "Path Aggregation Network for Instance Segmentation", CVPR 2018
(arXiv:1803.01534). Registering the pooler makes it an option of ``model/roi_heads/box_pooler`` and
``model/roi_heads/mask_pooler``; ``configs/model/roi_pooler/PANetPooler.yaml`` selects it for both.
"""

from projects.panet_pooler.fusion import fuse_levels
from projects.panet_pooler.pooler import PANetPooler

__all__ = ["PANetPooler", "fuse_levels"]
