"""Build a branch's RoI pooler from the feature maps it reads: one place that checks the names,
the channels and derives the scales, for the box branch, the mask branch and any variant's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from framework.errors import ConfigError
from framework.layers import ShapeSpec, check_feature_names
from framework.registry import ROI_POOLERS, Spec

__all__ = ["build_branch_pooler"]


def build_branch_pooler(
    spec: Spec[ROI_POOLERS], input_shape: Mapping[str, ShapeSpec], in_features: Sequence[str], resolution: int, *, knob: str
) -> tuple[list[str], nn.Module, ShapeSpec]:
    """A pooler over ``in_features`` (scales 1 / stride) and the shape of what it returns.

    Args:
        spec: the ROI_POOLERS component (name or config).
        input_shape: every backbone output, by name.
        in_features: the feature maps to pool from, finest first (e.g. p2..p5).
        resolution: side S of the pooled features.
        knob: the config key of ``in_features``, for the error messages.
    Returns:
        the feature names, the pooler, and ShapeSpec(C, S, S) of the pooled features (R, C, S, S).
    """
    names = check_feature_names(in_features, input_shape, knob=knob)
    channels = {input_shape[f].channels for f in names}
    if len(channels) != 1:
        raise ConfigError(
            f"{knob}: {names} have different channels {sorted(channels)}; one RoI pooler stacks levels of equal width"
        )
    pooler = ROI_POOLERS.build(spec, output_size=resolution, scales=[1.0 / input_shape[f].stride for f in names])
    return names, pooler, ShapeSpec(channels=channels.pop(), height=resolution, width=resolution)
