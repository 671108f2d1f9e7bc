"""Augmentations: the ``AUGMENTATIONS`` components a mapper runs in order (``input.train.augmentations``).

Importing this package registers the built-in ones. :mod:`.base` defines what an augmentation is
(and the mixing ones, which draw other samples); :mod:`.geometry` the operations on a whole sample.
"""

from .base import AugSample, Augmentation, MixingAugmentation, OtherSamples
from .copy_paste import CopyPaste, paste
from .flip import RandomHorizontalFlip
from .geometry import crop, horizontal_flip, pad, resize, resize_image_pil
from .scale_jitter import LargeScaleJitter, crop_and_pad_to, scale_jitter, scale_jitter_shape
from .shortest_edge import ResizeShortestEdge, ResizeShortestEdgeRange, ResizeShortestEdgeTorchvision, resize_shortest_edge_shape

__all__ = [
    "AugSample",
    "Augmentation",
    "CopyPaste",
    "LargeScaleJitter",
    "MixingAugmentation",
    "OtherSamples",
    "RandomHorizontalFlip",
    "ResizeShortestEdge",
    "ResizeShortestEdgeRange",
    "ResizeShortestEdgeTorchvision",
    "crop",
    "crop_and_pad_to",
    "horizontal_flip",
    "pad",
    "paste",
    "resize",
    "resize_image_pil",
    "resize_shortest_edge_shape",
    "scale_jitter",
    "scale_jitter_shape",
]
