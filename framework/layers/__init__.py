"""Thin layers over torch / torchvision.ops: shape specs, norms, conv wrappers, losses, mask ops."""

from framework.layers.batch_norm import FrozenBatchNorm2d, convert_frozen_batchnorm, get_norm
from framework.layers.mask_ops import paste_masks_in_image
from framework.layers.resize import resize_shortest_edge_torchvision
from framework.layers.shape_spec import ShapeSpec, check_feature_names
from framework.layers.wrappers import Conv2d

__all__ = ["ShapeSpec", "check_feature_names", "FrozenBatchNorm2d", "convert_frozen_batchnorm", "get_norm", "Conv2d", "paste_masks_in_image",
           "resize_shortest_edge_torchvision"]
