"""What test-time augmentation needs of a model, checked when the wrapper is built.

Any meta-architecture (a plugin's included) can be wrapped if it has, as GeneralizedRCNN has:

* ``inference(batched_inputs, do_postprocess=False, detected_instances=None)``: per input, its
  detections at the size of its ``image`` (``Instances`` with ``pred_boxes``, ``scores``,
  ``pred_classes``; ``pred_masks`` (R, 1, M, M) probabilities with a mask branch); with
  ``detected_instances`` (per input, given ``pred_boxes``, ``pred_classes``, ``scores`` at the
  size of its image) the same detections with what the branches that take given boxes predict
  (masks), every detection kept, in order;
* ``postprocess(instances, height, width)``: detections -> at (height, width), masks pasted;
* ``output_fields``: the fields of its outputs, ``pred_masks`` among them when it predicts masks.

Optional: ``roi_heads.mask_on`` (MaskBranchMixin's), switched off while the boxes of the views are
predicted, as detectron2 does, so that the mask branch runs once per view, on the merged boxes;
without it the box pass's masks are computed and dropped.
"""

from __future__ import annotations

import inspect
from typing import Any

from framework.errors import ConfigError

__all__ = ["MERGEABLE_FIELDS", "check_tta_model"]

#: The output fields test-time augmentation knows how to carry between views and merge.
MERGEABLE_FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")


def check_tta_model(model: Any, *, who: str) -> tuple[str, ...]:
    """Check that ``model`` has what the module docstring lists; return its output fields.

    Raises:
        ConfigError: naming the model's class, what it lacks or predicts that cannot be merged, and
            what to do.
    """
    name = type(model).__name__
    refuse = f"tta={who}: the model {name}"
    without = "evaluate without test-time augmentation (~tta)"
    inference = getattr(model, "inference", None)
    params = inspect.signature(inference).parameters if callable(inference) else {}
    lacking = [p for p in ("do_postprocess", "detected_instances") if p not in params]
    if not callable(inference) or lacking:
        raise ConfigError(
            f"{refuse} cannot be evaluated with test-time augmentation: it needs a method inference(batched_inputs, "
            "do_postprocess=False, detected_instances=None), as GeneralizedRCNN has"
            + (f" (its inference() lacks {lacking})" if callable(inference) else "") + f"; {without}")
    if not callable(getattr(model, "postprocess", None)):
        raise ConfigError(f"{refuse} has no postprocess(instances, height, width) (GeneralizedRCNN's), which maps the "
                          f"merged detections to the original image and pastes masks; {without}")
    fields = getattr(model, "output_fields", None)
    if fields is None:
        raise ConfigError(f"{refuse} does not declare its output_fields (its RoI heads have none), so it is not known "
                          "whether it predicts masks; give the RoI heads an output_fields property (MaskBranchMixin "
                          f"has one), or {without}")
    unknown = [f for f in fields if f not in MERGEABLE_FIELDS]
    if unknown:
        raise ConfigError(f"{refuse} predicts {unknown}, which test-time augmentation cannot map between resized and "
                          f"mirrored views (it merges {list(MERGEABLE_FIELDS)}); {without}")
    if getattr(model, "test_resize", None) is not None:
        raise ConfigError(f"tta={who}: model.test_resize={list(model.test_resize)} resizes every image inside the "
                          "model, which would undo the sizes of the views; set model.test_resize=null and resize in "
                          f"the test pipeline (input.test.augmentations: ResizeShortestEdgeTorchvision), or {without}")
    return tuple(fields)
