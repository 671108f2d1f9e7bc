"""Test-time augmentation (TEST_TIME_AUGMENTATIONS, config ``tta``): model wrappers that detect
over augmented copies of each test image and merge the results (docs/evaluation.md)."""

from framework.modeling.tta.model_interface import check_tta_model
from framework.modeling.tta.multi_scale_flip import MultiScaleFlip

__all__ = ["MultiScaleFlip", "check_tta_model"]
