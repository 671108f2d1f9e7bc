"""DatasetMapper: one dataset dict -> one model input (the augmented image + its gt Instances).

The mapper reads the image and its annotations into an
:class:`~framework.data.augmentations.AugSample`, runs its ``augmentations`` (``AUGMENTATIONS``
components, in the order of the config list) and makes the model's input of the result. The
default lists (configs/train.yaml) are detectron2's default ``DatasetMapper``
(``ResizeShortestEdge`` then ``RandomFlip`` in training, the resize alone at test), so that models
trained or evaluated here see the same inputs; polygons stay polygons through the augmentations
and are only rasterised later, inside each proposal box.

Randomness is drawn from the global generators, which the training loader
(:func:`framework.data.build.build_train_loader`) seeds per sample, so a run is reproducible
given its seed, whatever the number of workers. A mixing augmentation also draws other samples,
from the :class:`~framework.data.draws.DatasetDraws` the training loader passes (``draws=``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal, Optional

from framework.errors import ConfigError, did_you_mean
from framework.registry import AUGMENTATIONS, Spec, config_section

from .augmentations import AugSample, MixingAugmentation
from .detection_utils import (
    IMAGE_FORMATS,
    MASK_FORMATS,
    annotations_to_instances,
    check_image_size,
    filter_empty_instances,
    read_image,
)
from .draws import DatasetDraws

__all__ = ["DatasetMapper"]


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"DatasetMapper: {name} must be one of {list(choices)}, got {value!r}.{did_you_mean(str(value), choices)}")


@config_section("mapper")
class DatasetMapper:
    """Callable turning a dataset dict into the input dict of a detector.

    Knobs:
        is_train: training adds the gt ``instances`` (and may use mixing augmentations); testing
            keeps no annotations.
        augmentations: the pipeline, in order: ``AUGMENTATIONS`` components (registered names,
            mappings with ``name`` and knobs, or built objects), e.g.
            ``[{name: ResizeShortestEdge, short_edge_length: [640, 800]}, RandomHorizontalFlip]``.
        image_format: channel order of the output image (must match the model's ``input_format``).
        mask_format: ``"polygon"`` keeps polygon masks as polygons (images with RLE masks get
            BitMasks); ``"bitmask"`` rasterises all masks. See :func:`annotations_to_instances`.
        mask_on: add ``gt_masks`` (needs a ``segmentation`` on every non-crowd annotation).

    Call: ``mapper(dataset_dict, draws=None) -> dict`` (the input dict is deep-copied, never
        modified) with
        ``image``: (3, H', W') tensor in ``image_format``, augmented; uint8 (float32 after a float
        resize such as ``ResizeShortestEdgeTorchvision``);
        ``height``, ``width``: the ORIGINAL image size (predictions are mapped back to it);
        ``file_name``, ``image_id`` and any other key of the dict, except ``annotations``;
        ``instances`` (training only): Instances of size (H', W') with ``gt_boxes``, ``gt_classes``
        (and ``gt_masks``), crowd annotations and instances emptied by the augmentations left out.
        ``draws`` (the other samples mixing augmentations take) is given by the training loader.
    """

    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[Spec[AUGMENTATIONS]],
        image_format: Literal["BGR", "RGB"] = "BGR",
        mask_format: Literal["polygon", "bitmask"] = "polygon",
        mask_on: bool = True,
    ) -> None:
        _check_choice("image_format", image_format, IMAGE_FORMATS)
        _check_choice("mask_format", mask_format, MASK_FORMATS)
        if isinstance(augmentations, (str, dict)) or not isinstance(augmentations, Sequence):
            raise ConfigError(f"DatasetMapper: augmentations must be a list of AUGMENTATIONS components, got {augmentations!r}")
        self.augmentations = [AUGMENTATIONS.build(a, path=f"augmentations.{i}") for i, a in enumerate(augmentations)]
        for i, aug in enumerate(self.augmentations):
            if not callable(aug):
                raise ConfigError(f"DatasetMapper: augmentations.{i} ({aug!r}) is not callable")
            if isinstance(aug, MixingAugmentation) and not is_train:
                raise ConfigError(f"DatasetMapper(is_train=False): augmentations.{i} ({type(aug).__name__}) mixes in "
                                  "other training samples, which only training draws")
            if getattr(aug, "train_only", False) and not is_train:
                raise ConfigError(f"DatasetMapper(is_train=False): augmentations.{i} ({type(aug).__name__}) is for "
                                  "training only: predictions are mapped back to the original image by a rescale, "
                                  "which its geometry would break; test with a resize (ResizeShortestEdge)")
            if getattr(aug, "needs_masks", False) and not mask_on:
                raise ConfigError(f"DatasetMapper: augmentations.{i} ({type(aug).__name__}) works on the instance "
                                  "masks, but mask_on=False: set mask_on=true (e.g. input.train.mask_on=true)")
        self.is_train = bool(is_train)
        self.image_format = image_format
        self.mask_format = mask_format
        self.mask_on = mask_on

    def __repr__(self) -> str:
        return (f"DatasetMapper(is_train={self.is_train}, augmentations={self.augmentations}, "
                f"image_format={self.image_format!r}, mask_format={self.mask_format!r}, mask_on={self.mask_on})")

    @property
    def takes_draws(self) -> bool:
        """Whether an augmentation mixes in other samples (then the loader passes ``draws``)."""
        return any(isinstance(aug, MixingAugmentation) for aug in self.augmentations)

    # ------------------------------------------------------------------ mapping
    def __call__(self, dataset_dict: dict[str, Any], *, draws: Optional[DatasetDraws] = None) -> dict[str, Any]:
        d = copy.deepcopy(dataset_dict)  # the caller's dict (e.g. the dataset list) must stay intact
        annos = d.pop("annotations", None)
        with_gt = self.is_train and annos is not None
        sample = self.load(d, annos if with_gt else None)
        others = _OtherSamples(self, draws)
        for aug in self.augmentations:
            sample = aug(sample, others) if isinstance(aug, MixingAugmentation) else aug(sample)
        d["image"] = sample.image.contiguous()
        if with_gt:
            d["instances"] = filter_empty_instances(sample.to_instances())
        return d

    def load(self, d: dict[str, Any], annos: Optional[list[dict[str, Any]]]) -> AugSample:
        """The image of dataset dict ``d`` (its size checked, ``height``/``width`` filled in) and
        the ground truth of ``annos`` (None: no objects), before any augmentation.

        Crowd annotations are left out; with ``mask_on`` every other one needs a ``segmentation``.
        """
        image = read_image(d["file_name"], format=self.image_format)
        check_image_size(d, image)
        if annos is None:
            return AugSample.from_instances(image)
        annos = [a for a in annos if a.get("iscrowd", 0) == 0]
        if self.mask_on:
            missing = [a.get("id") for a in annos if "segmentation" not in a]
            if missing:
                raise ValueError(f"{d['file_name']}: annotations {missing} have no 'segmentation' but mask_on=True; "
                                 "use mask_on=False to train without masks")
        else:
            annos = [{k: v for k, v in a.items() if k != "segmentation"} for a in annos]
        try:
            instances = annotations_to_instances(annos, tuple(image.shape[-2:]), mask_format=self.mask_format)
        except ValueError as e:
            raise ValueError(f"{d['file_name']} (image_id={d.get('image_id')}): {e}") from e
        return AugSample.from_instances(image, instances)


class _OtherSamples:
    """The mapper's :class:`~framework.data.augmentations.OtherSamples`: each draw loads another
    dataset dict (from the loader's ``draws``) as the mapper loads its own, before augmentation."""

    def __init__(self, mapper: DatasetMapper, draws: Optional[DatasetDraws]) -> None:
        self.mapper = mapper
        self.draws = draws

    def draw(self) -> AugSample:
        if self.draws is None:
            raise RuntimeError("a mixing augmentation asked for another sample, but this mapper was called without "
                               "draws: map through build_train_loader, or pass draws= (framework.data.draws)")

        def load(raw: dict[str, Any]) -> AugSample:
            d = copy.deepcopy(raw)
            return self.mapper.load(d, d.pop("annotations", []))

        return self.draws.draw(load)
