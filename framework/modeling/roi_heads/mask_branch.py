"""The mask branch of the RoI heads, for any RoI-heads variant: two functions and the mixin that uses them.

A mask head (MASK_HEADS) takes one of two inputs, chosen by the RoI heads' ``mask_pooler`` knob:

* **pooled features** (``mask_pooler`` set, the default): the head is built with
  ``input_shape=ShapeSpec(C, S, S)`` and called as ``head(x, instances)`` with ``x`` (R, C, S, S),
  the features of ``mask_in_features`` pooled in each box. :class:`BaseMaskRCNNHead` heads (write
  ``layers()`` only) are of this kind.
* **the feature maps** (``mask_pooler: null``, detectron2's convention): the head is built with
  ``input_shape={name: ShapeSpec}`` and called as ``head(features, instances)`` with
  ``features = {name: (N, C, H, W)}`` for ``mask_in_features``: it pools, samples points or
  upsamples as it likes (PointRend, boundary refinement). Annotate its ``input_shape`` as a
  ``Mapping`` so that a config that forgets ``mask_pooler: null`` fails with a message.

Either way ``instances`` holds, per image (``image_size`` = the resized input's (h, w)), in
training the foreground proposals (``proposal_boxes``, ``gt_classes`` and the matched ``gt_masks``,
``gt_boxes``), at inference the detections (``pred_boxes``, ``pred_classes``, ``scores``). The
head returns ``{"loss_...": ...}`` in training and the instances with ``pred_masks`` (Ri, 1, M, M)
probabilities at inference.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Optional

import torch
from torch import nn

from framework.errors import ConfigError
from framework.layers import ShapeSpec, check_feature_names
from framework.registry import MASK_HEADS, ROI_POOLERS, Spec
from framework.structures import Instances

from .proposal_labeling import select_foreground_proposals
from .roi_pooling import build_branch_pooler

__all__ = ["MaskBranchMixin", "build_mask_branch", "forward_mask_branch", "reads_feature_maps"]


def reads_feature_maps(head_cls: type) -> Optional[bool]:
    """Whether a mask head class declares ``input_shape: Mapping[...]`` (it reads the feature maps),
    ``False`` for ``ShapeSpec``, ``None`` when its ``input_shape`` is not annotated."""
    param = inspect.signature(head_cls).parameters.get("input_shape")
    if param is None or param.annotation is param.empty:
        return None
    try:
        annotation = typing.get_type_hints(head_cls.__init__).get("input_shape")
    except Exception:  # an annotation naming a type its module does not import: say nothing
        return None
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Mapping)


def build_mask_branch(
    input_shape: Mapping[str, ShapeSpec],
    *,
    num_classes: int,
    head: Spec[MASK_HEADS],
    pooler: Optional[Spec[ROI_POOLERS]],
    pooler_resolution: int,
    in_features: Sequence[str],
    path: str = "model.roi_heads",
) -> tuple[list[str], Optional[nn.Module], nn.Module]:
    """Build the mask branch's pooler (``None`` for a head that reads the feature maps) and head.

    Returns:
        (feature names, pooler or None, mask head).
    """
    head_cls = MASK_HEADS.class_of(head, path=f"{path}.mask_head")
    kind = reads_feature_maps(head_cls)
    head_name = head if isinstance(head, str) else head.get("name") if hasattr(head, "get") else head_cls.__name__
    if pooler is None:
        names = check_feature_names(in_features, input_shape, knob=f"{path}.mask_in_features")
        if kind is False:
            raise ConfigError(
                f"{path}.mask_pooler is null, so the mask head gets the feature maps, but "
                f"{path}.mask_head={head_name} takes pooled features (input_shape: ShapeSpec). "
                f"Set {path}.mask_pooler to a pooler ({', '.join(ROI_POOLERS.names())}), or pick a head that "
                f"reads feature maps"
            )
        shapes = {f: input_shape[f] for f in names}
        return names, None, MASK_HEADS.build(head, input_shape=shapes, num_classes=num_classes)
    if kind is True:
        raise ConfigError(
            f"{path}.mask_head={head_name} reads the feature maps (input_shape: Mapping[str, ShapeSpec]), "
            f"so the RoI heads must not pool for it: set {path}.mask_pooler=null"
        )
    names, pooler_module, pooled = build_branch_pooler(
        pooler, input_shape, in_features, pooler_resolution, knob=f"{path}.mask_in_features"
    )
    return names, pooler_module, MASK_HEADS.build(head, input_shape=pooled, num_classes=num_classes)


def forward_mask_branch(
    features: Mapping[str, torch.Tensor],
    instances: list[Instances],
    *,
    in_features: Sequence[str],
    pooler: Optional[nn.Module],
    head: nn.Module,
    num_classes: int,
    training: bool,
) -> dict[str, torch.Tensor] | list[Instances]:
    """Mask losses (training: on the foreground of the labelled ``instances``) or the detections
    with ``pred_masks`` (inference). The pooled features keep the feature maps' memory format
    (``GeneralizedRCNN.channels_last``): NHWC is the mask head's faster layout on CPU."""
    if training:
        instances = select_foreground_proposals(instances, num_classes)
    if pooler is None:
        return head({f: features[f] for f in in_features}, instances)
    boxes = [i.proposal_boxes for i in instances] if training else [i.pred_boxes for i in instances]
    return head(pooler([features[f] for f in in_features], boxes), instances)


class MaskBranchMixin:
    """The mask branch of an RoI-heads module, for any variant: ``mask_on``, ``mask_in_features``,
    ``mask_pooler``, ``mask_head`` (detectron2's attribute and parameter names), ``output_fields``,
    ``_forward_mask`` and ``forward_with_given_boxes``. The module sets ``num_classes`` and calls
    :meth:`_init_mask_branch` from its constructor."""

    num_classes: int

    def _init_mask_branch(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        head: Optional[Spec[MASK_HEADS]],
        pooler: Optional[Spec[ROI_POOLERS]],
        pooler_resolution: int,
        in_features: Sequence[str],
    ) -> None:
        """Build the branch (nothing with ``head=None``: Faster R-CNN)."""
        self.mask_on = head is not None
        if self.mask_on:
            self.mask_in_features, self.mask_pooler, self.mask_head = build_mask_branch(
                input_shape,
                num_classes=self.num_classes,
                head=head,
                pooler=pooler,
                pooler_resolution=pooler_resolution,
                in_features=in_features,
            )

    @property
    def output_fields(self) -> tuple[str, ...]:
        """The fields of the ``Instances`` the RoI heads predict at inference (what evaluators and
        exporters can expect): boxes, scores and classes, plus ``pred_masks`` with a mask head."""
        return ("pred_boxes", "scores", "pred_classes", *(("pred_masks",) if self.mask_on else ()))

    def _forward_mask(self, features: Mapping[str, torch.Tensor], instances: list[Instances]):
        """Mask losses (training) or ``pred_masks`` (inference): :func:`forward_mask_branch`."""
        return forward_mask_branch(
            features,
            instances,
            in_features=self.mask_in_features,
            pooler=self.mask_pooler,
            head=self.mask_head,
            num_classes=self.num_classes,
            training=self.training,
        )

    def forward_with_given_boxes(self, features: Mapping[str, torch.Tensor], instances: list[Instances]) -> list[Instances]:
        """Inference of the mask branch on final detections (unchanged without a mask head)."""
        return self._forward_mask(features, instances) if self.mask_on else instances
