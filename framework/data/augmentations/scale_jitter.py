"""Large-scale jitter (LSJ): the training resize of detectron2's new baselines (``ResizeScale`` then
``FixedSizeCrop``, after Google's ``resize_and_crop_image``): the image scaled to fit a fixed size
times a random factor, then randomly cropped to that size where it is larger and padded to it where
it is smaller, so that every training image has the same size."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from framework.errors import ConfigError
from framework.registry import AUGMENTATIONS

from .base import AugSample, Augmentation
from .geometry import crop, pad, resize

__all__ = [
    "LargeScaleJitter",
    "check_scale_range",
    "crop_and_pad_to",
    "draw_scale",
    "remove_cropped_away",
    "scale_jitter",
    "scale_jitter_shape",
]


def scale_jitter_shape(height: int, width: int, size: Sequence[int], scale: float) -> tuple[int, int]:
    """(new_h, new_w) of a (height, width) image scaled, aspect ratio kept, to fit inside
    ``size`` = (target_h, target_w) times ``scale`` (detectron2's ``ResizeScale``).

    The factor is ``min(target_h * scale / height, target_w * scale / width)``; sides are rounded
    half to even (numpy's and Python's ``round``), and at least 1. E.g. a 200x400 image, a 256x256
    size and scale 0.5: factor min(0.64, 0.32) = 0.32, so 64x128.
    """
    target_h, target_w = size
    factor = min(target_h * scale / height, target_w * scale / width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def remove_cropped_away(sample: AugSample) -> AugSample:
    """The sample without the objects whose box has no width or height left (cropped away: a crop
    clamps the boxes of the objects outside it to a line)."""
    boxes = sample.boxes.as_subclass(torch.Tensor)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return sample if bool(keep.all()) else sample.select(keep)


def crop_and_pad_to(sample: AugSample, size: Sequence[int], *, fraction: float, pad_value: float) -> AugSample:
    """The sample cropped and padded to ``size`` = (target_h, target_w) (detectron2's ``FixedSizeCrop``).

    Where a side is longer than the target, the crop starts at ``round(fraction * excess)`` along
    it, the same ``fraction`` (in [0, 1]) for rows and columns, as detectron2 draws it; where a side
    is shorter, rows / columns of ``pad_value`` are added at the bottom / right (bit masks get
    background there, so the padding is never an object). Objects cropped away are removed
    (:func:`remove_cropped_away`).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"crop_and_pad_to: fraction must be in [0, 1], got {fraction}")
    (h, w), (target_h, target_w) = sample.image_size, (int(size[0]), int(size[1]))
    if h > target_h or w > target_w:
        top, left = round(max(h - target_h, 0) * fraction), round(max(w - target_w, 0) * fraction)
        sample = remove_cropped_away(crop(sample, top, left, min(h, target_h), min(w, target_w)))
    h, w = sample.image_size
    return pad(sample, bottom=target_h - h, right=target_w - w, fill=pad_value)


def scale_jitter(sample: AugSample, size: Sequence[int], *, scale: float, fraction: float, pad_value: float) -> AugSample:
    """``sample`` resized to :func:`scale_jitter_shape` (PIL bilinear, as
    :func:`~framework.data.augmentations.geometry.resize`), then :func:`crop_and_pad_to` ``size``.

    Returns:
        the sample, of size ``size``.
    """
    h, w = sample.image_size
    resized = resize(sample, scale_jitter_shape(h, w, size, scale))
    return crop_and_pad_to(resized, size, fraction=fraction, pad_value=pad_value)


def check_scale_range(owner: str, min_scale: float, max_scale: float) -> None:
    """One message naming ``owner`` unless 0 < min_scale <= max_scale."""
    if not 0.0 < min_scale <= max_scale:
        raise ConfigError(f"{owner}: need 0 < min_scale <= max_scale, got min_scale={min_scale!r}, max_scale={max_scale!r}")


def draw_scale(min_scale: float, max_scale: float) -> float:
    """A scale drawn uniformly from [min_scale, max_scale] (torch's global generator, float64)."""
    return min_scale + (max_scale - min_scale) * torch.rand((), dtype=torch.float64).item()


@AUGMENTATIONS.register()
class LargeScaleJitter(Augmentation):
    """Large-scale jitter (Ghiasi et al. 2021; detectron2's new baselines): scale the image to fit an
    ``image_size`` square times a factor drawn uniformly from [``min_scale``, ``max_scale``], crop a
    random ``image_size`` square out of it where it is larger, pad it (bottom and right,
    ``pad_value``) where it is smaller (:func:`scale_jitter`). Every image leaves ``image_size``
    x ``image_size``. Objects cropped away are removed; an image may be left without any (it is
    trained on and counted, ``data/empty_images``).

    Boxes follow the geometry (scaled, then clamped to the crop); detectron2's LSJ config
    recomputes them from the cropped masks instead (``recompute_boxes``), which is tighter for an
    object the crop cuts. Training only: the test pipeline maps predictions back to the original
    image by a plain rescale, which a crop or a pad would break (test with a resize).

    Knobs:
        image_size: side of the output square (detectron2: 1024).
        min_scale, max_scale: the range of the random factor (0.1 and 2.0 for LSJ; 0.8-1.25 is
            the paper's "standard scale jitter").
        pad_value: the padded pixels' value, in every channel (detectron2: 128).
    """

    train_only = True

    def __init__(self, *, image_size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0,
                 pad_value: float = 128.0) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
            raise ConfigError(f"LargeScaleJitter: image_size must be a positive int, got {image_size!r}")
        check_scale_range("LargeScaleJitter", min_scale, max_scale)
        self.image_size = image_size
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.pad_value = float(pad_value)

    def __call__(self, sample: AugSample) -> AugSample:
        scale = draw_scale(self.min_scale, self.max_scale)
        fraction = torch.rand((), dtype=torch.float64).item()
        return scale_jitter(sample, (self.image_size, self.image_size), scale=scale, fraction=fraction,
                            pad_value=self.pad_value)
