"""Meta-architectures (META_ARCHITECTURES): whole models."""

from framework.modeling.meta_arch.rcnn import GeneralizedRCNN

__all__ = ["GeneralizedRCNN"]
