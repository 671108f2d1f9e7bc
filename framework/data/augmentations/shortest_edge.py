"""Shortest-edge resizes (detectron2's ``ResizeShortestEdge``, and torchvision's detection resize)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.errors import ConfigError
from framework.layers.resize import resize_shortest_edge_shape, resize_shortest_edge_torchvision
from framework.registry import AUGMENTATIONS

from .base import AugSample, Augmentation
from .geometry import resize

__all__ = ["ResizeShortestEdge", "ResizeShortestEdgeRange", "ResizeShortestEdgeTorchvision", "resize_shortest_edge_shape"]



@AUGMENTATIONS.register()
class ResizeShortestEdge(Augmentation):
    """Resize so that the shorter side is one of ``short_edge_length`` (drawn uniformly per image)
    and the longer one at most ``max_size``: detectron2's ``ResizeShortestEdge`` (``"choice"``), its
    pixels included (sides rounded half up, PIL bilinear on the uint8 image; see
    :func:`~framework.data.augmentations.geometry.resize`).

    Knobs:
        short_edge_length: the shorter-side lengths to draw from; 0 means no resize. One value
            (the usual test setting) still draws, from one choice.
        max_size: upper bound on the longer side.
    """

    def __init__(self, *, short_edge_length: Sequence[int] = (800,), max_size: int = 1333) -> None:
        lengths = (short_edge_length,) if isinstance(short_edge_length, int) else tuple(short_edge_length)
        if not lengths or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in lengths):
            raise ConfigError(f"{type(self).__name__}: short_edge_length must be a non-empty list of non-negative ints, "
                              f"got {short_edge_length!r}")
        if not isinstance(max_size, int) or max_size <= 0:
            raise ConfigError(f"{type(self).__name__}: max_size must be a positive int, got {max_size!r}")
        self.short_edge_length = lengths
        self.max_size = max_size

    def sample_short_edge(self) -> int:
        """The shorter-side length for one image, from torch's global generator."""
        return self.short_edge_length[int(torch.randint(len(self.short_edge_length), ()).item())]

    def resize(self, sample: AugSample, short_edge: int) -> AugSample:
        """``sample`` resized for a shorter side of ``short_edge`` (what a subclass may change)."""
        h, w = sample.image_size
        return resize(sample, resize_shortest_edge_shape(h, w, short_edge, self.max_size))

    def __call__(self, sample: AugSample) -> AugSample:
        return self.resize(sample, self.sample_short_edge())


@AUGMENTATIONS.register()
class ResizeShortestEdgeRange(ResizeShortestEdge):
    """:class:`ResizeShortestEdge` with the shorter side drawn uniformly from the integers of
    ``[short_edge_length[0], short_edge_length[1]]`` (detectron2's ``sample_style="range"``).

    Knobs:
        short_edge_length: ``[low, high]``, low <= high.
        max_size: upper bound on the longer side.
    """

    def __init__(self, *, short_edge_length: Sequence[int], max_size: int = 1333) -> None:
        super().__init__(short_edge_length=short_edge_length, max_size=max_size)
        low_high = self.short_edge_length
        if len(low_high) != 2 or low_high[0] > low_high[1]:
            raise ConfigError(f"ResizeShortestEdgeRange: short_edge_length must be [low, high] with low <= high, "
                              f"got {list(low_high)}")

    def sample_short_edge(self) -> int:
        low, high = self.short_edge_length
        return int(torch.randint(low, high + 1, ()).item())


@AUGMENTATIONS.register()
class ResizeShortestEdgeTorchvision(ResizeShortestEdge):
    """:class:`ResizeShortestEdge` as torchvision's detection models resize internally: sides
    floored, float bilinear without antialiasing or rounding
    (:func:`framework.layers.resize.resize_shortest_edge_torchvision`, bit for bit torchvision's
    resize); the image becomes float32, even for ``short_edge_length`` 0 (no resize).

    torchvision normalises before resizing and the model after, so the model's input matches
    torchvision's to float rounding (tests/checkpoint/test_torchvision_equivalence.py checks the
    detections to 2e-2 px): for bit-identical inputs resize in the model instead,
    GeneralizedRCNN's ``test_resize``.

    Knobs:
        short_edge_length: the shorter-side lengths to draw from; 0 means no resize.
        max_size: upper bound on the longer side.
    """

    def resize(self, sample: AugSample, short_edge: int) -> AugSample:
        image = resize_shortest_edge_torchvision(sample.image, short_edge, self.max_size)
        return resize(sample, (int(image.shape[-2]), int(image.shape[-1])), image=image)
