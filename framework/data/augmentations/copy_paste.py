"""Simple copy-paste (Ghiasi et al. 2021, "Simple Copy-Paste is a Strong Data Augmentation Method for
Instance Segmentation"): objects of another training image pasted, with their masks, onto the sample."""

from __future__ import annotations

import dataclasses
import math

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from framework.errors import ConfigError
from framework.registry import AUGMENTATIONS
from framework.structures import BitMasks, PolygonMasks

from .base import AugSample, Masks, MixingAugmentation, OtherSamples
from .geometry import horizontal_flip
from .scale_jitter import check_scale_range, draw_scale, scale_jitter

__all__ = ["CopyPaste", "paste", "to_bitmasks"]


def to_bitmasks(masks: Masks, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool of ``masks`` on an image of ``size`` = (H, W): polygons rasterised (COCO API;
    what lies outside the image is cut), bit masks as they are."""
    if isinstance(masks, BitMasks):
        return masks.tensor
    if isinstance(masks, PolygonMasks):
        return BitMasks.from_polygon_masks(masks, *size).tensor
    raise TypeError(f"copy-paste needs instance masks (PolygonMasks or BitMasks), got {type(masks).__name__}")


def _tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float64 XYXY boxes around the pixels of (N, H, W) bool ``masks`` (a pixel (x, y) spans [x, x + 1))."""
    return BitMasks(masks).get_bounding_boxes().tensor.double()


def _blend(image: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """``pasted`` over ``image`` ((C, H, W), same dtype) where the (H, W) bool ``alpha`` is set; with
    ``blur_sigma`` > 0 the alpha is Gaussian-blurred first (kernel 2 * ceil(3 sigma) + 1) and the
    images mixed by it (rounded back for an integer image)."""
    if blur_sigma <= 0:
        return torch.where(alpha, pasted, image)
    k = 2 * math.ceil(3 * blur_sigma) + 1
    soft = F.gaussian_blur(alpha[None].float(), [k, k], [blur_sigma, blur_sigma])
    mixed = image.float() * (1 - soft) + pasted.float() * soft
    if image.dtype.is_floating_point:
        return mixed.to(image.dtype)
    info = torch.iinfo(image.dtype)
    return mixed.round().clamp(info.min, info.max).to(image.dtype)


def paste(sample: AugSample, pasted: AugSample, *, blur_sigma: float = 0.0) -> AugSample:
    """The objects of ``pasted`` (all of them, on a canvas of the sample's size) pasted onto ``sample``.

    The image takes ``pasted``'s pixels where the union of its object masks (the alpha) is set
    (blended with a blurred alpha when ``blur_sigma`` > 0). The sample's masks lose the alpha's
    pixels; an object that loses any gets its box recomputed from what is left (tight around the
    pixels), and one that loses all of them (fully covered) is removed. The pasted objects follow,
    with their boxes as given and their masks as bit masks. Both samples' masks become
    (N, H, W) :class:`BitMasks` (polygons rasterised); pasted objects without any pixel on the
    canvas are left out. Nothing to paste: ``sample`` itself.

    Args:
        sample: the sample, of size (H, W), with masks.
        pasted: the objects to paste, of size (H, W), with masks.

    Returns:
        the sample with its visible objects, then the pasted ones.
    """
    size = sample.image_size
    if pasted.image_size != size:
        raise ValueError(f"paste: the pasted sample is {pasted.image_size}, the sample {size}: bring it to the sample's size first")
    if sample.masks is None or pasted.masks is None:
        raise ValueError("paste: copy-paste cuts objects out by their masks, and a sample has none (mask_on=False?)")
    new = to_bitmasks(pasted.masks, size)
    on_canvas = new.flatten(1).any(dim=1)
    if not bool(on_canvas.any()):
        return sample
    new = new[on_canvas]
    alpha = new.any(dim=0)
    own = to_bitmasks(sample.masks, size)
    covered = (own & alpha).flatten(1).any(dim=1)
    own = own & ~alpha
    visible = own.flatten(1).any(dim=1)

    own_boxes = sample.boxes.as_subclass(torch.Tensor).clone()
    if bool(covered.any()):
        own_boxes[covered] = _tight_boxes(own[covered])
    new_boxes = pasted.boxes.as_subclass(torch.Tensor)[on_canvas]
    boxes = tv_tensors.wrap(torch.cat([own_boxes[visible], new_boxes.to(own_boxes.dtype)]), like=sample.boxes)
    image = _blend(sample.image, pasted.image.to(sample.image.dtype), alpha, blur_sigma)
    return dataclasses.replace(sample, image=image, boxes=boxes,
                               classes=torch.cat([sample.classes[visible], pasted.classes[on_canvas]]),
                               masks=BitMasks(torch.cat([own[visible], new])))


@AUGMENTATIONS.register()
class CopyPaste(MixingAugmentation):
    """Simple copy-paste (Ghiasi et al. 2021): with probability ``prob``, draw another training
    image, jitter it, and paste a random subset of its objects onto the sample (:func:`paste`:
    occluded masks lose the pasted pixels and get boxes recomputed from them, fully covered
    objects are removed).

    The other image arrives as read (before any augmentation), while the sample has been through
    the pipeline before this entry (e.g. ``LargeScaleJitter`` and a flip). As the paper jitters both
    images independently, the other one gets a jitter of its own here: scaled to fit the sample's
    canvas (H, W) times a factor drawn from [``min_scale``, ``max_scale``], randomly cropped /
    padded to (H, W) (:func:`~framework.data.augmentations.scale_jitter.scale_jitter`, the same
    operation as ``LargeScaleJitter``), then mirrored with probability ``flip_prob``. Each of its
    objects that the jitter leaves on the canvas is pasted with probability ``object_prob``
    (independently: every subset is equally likely at 0.5).

    Masks: pasting works on pixels, so both images' masks become bit masks at the canvas size
    (polygons rasterised with the COCO API) whenever something is pasted; the mask targets of such
    an image are then cut out of bit masks (RoIAlign), not rasterised from polygons inside each box.

    Knobs:
        prob: probability of pasting onto a sample (1.0 in the paper).
        object_prob: probability that each object of the other image is pasted.
        min_scale, max_scale: scale range of the other image's jitter (the paper's LSJ: 0.1, 2.0;
            1.0 and 1.0: fit the canvas, no jitter).
        flip_prob: probability of mirroring the other image.
        blur_sigma: standard deviation (px) of a Gaussian blur of the alpha (the paper finds it
            optional); 0: a hard paste.
    """

    needs_masks = True

    def __init__(self, *, prob: float = 1.0, object_prob: float = 0.5, min_scale: float = 0.1, max_scale: float = 2.0,
                 flip_prob: float = 0.5, blur_sigma: float = 0.0) -> None:
        for name, value in (("prob", prob), ("object_prob", object_prob), ("flip_prob", flip_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"CopyPaste: {name} must be in [0, 1], got {value!r}")
        check_scale_range("CopyPaste", min_scale, max_scale)
        if blur_sigma < 0:
            raise ConfigError(f"CopyPaste: blur_sigma must be >= 0 (0: no blur), got {blur_sigma!r}")
        self.prob = float(prob)
        self.object_prob = float(object_prob)
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.flip_prob = float(flip_prob)
        self.blur_sigma = float(blur_sigma)

    def jitter(self, other: AugSample, size: tuple[int, int]) -> AugSample:
        """The other sample brought to the canvas ``size`` = (H, W): scale jitter, crop / pad, flip."""
        scale = draw_scale(self.min_scale, self.max_scale)
        fraction = torch.rand((), dtype=torch.float64).item()
        other = scale_jitter(other, size, scale=scale, fraction=fraction, pad_value=0.0)  # the padding is never pasted
        return horizontal_flip(other) if torch.rand(()).item() < self.flip_prob else other

    def __call__(self, sample: AugSample, others: OtherSamples) -> AugSample:  # type: ignore[override]
        if torch.rand(()).item() >= self.prob:
            return sample
        if sample.masks is None:
            raise ValueError("CopyPaste pastes objects by their masks, but the sample has none: keep the mapper's "
                             "mask_on=true")
        other = self.jitter(others.draw(), sample.image_size)
        chosen = torch.rand(len(other)) < self.object_prob
        return paste(sample, other.select(chosen), blur_sigma=self.blur_sigma)
