"""Random horizontal flip."""

from __future__ import annotations

import torch

from framework.errors import ConfigError
from framework.registry import AUGMENTATIONS

from .base import AugSample, Augmentation
from .geometry import horizontal_flip

__all__ = ["RandomHorizontalFlip"]


@AUGMENTATIONS.register()
class RandomHorizontalFlip(Augmentation):
    """Mirror the image and its ground truth left-right with probability ``prob``
    (:func:`~framework.data.augmentations.geometry.horizontal_flip`).

    Knobs:
        prob: probability of a flip; one draw of ``torch.rand`` per image whatever its value.
    """

    def __init__(self, *, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"RandomHorizontalFlip: prob must be in [0, 1], got {prob!r}")
        self.prob = prob

    def __call__(self, sample: AugSample) -> AugSample:
        return horizontal_flip(sample) if torch.rand(()).item() < self.prob else sample
