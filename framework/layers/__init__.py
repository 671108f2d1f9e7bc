"""Thin layers over torch / torchvision.ops: shape specs, norms, conv wrappers, losses, mask ops."""

from framework.layers.shape_spec import ShapeSpec

__all__ = ["ShapeSpec"]
