"""Augmentations: the ``AUGMENTATIONS`` components a mapper runs in order (``input.train.augmentations``).

Importing this package registers the built-in ones. :mod:`.base` defines what an augmentation is
(and the mixing ones, which draw other samples); :mod:`.geometry` the operations on a whole sample.
"""

from .base import AugSample, Augmentation, MixingAugmentation, OtherSamples
from .flip import RandomHorizontalFlip
from .geometry import crop, horizontal_flip, resize, resize_image_pil
from .shortest_edge import ResizeShortestEdge, ResizeShortestEdgeRange, ResizeShortestEdgeTorchvision, resize_shortest_edge_shape

__all__ = [
    "AugSample",
    "Augmentation",
    "MixingAugmentation",
    "OtherSamples",
    "RandomHorizontalFlip",
    "ResizeShortestEdge",
    "ResizeShortestEdgeRange",
    "ResizeShortestEdgeTorchvision",
    "crop",
    "horizontal_flip",
    "resize",
    "resize_image_pil",
    "resize_shortest_edge_shape",
]
