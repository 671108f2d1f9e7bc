"""ShapeSpec: what a parent tells a child about the tensors it will receive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from framework.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a feature map (or vector) without the batch dimension.

    Attributes:
        channels: number of channels C.
        height, width: spatial size when known (pooled RoI features), else None.
        stride: input pixels per feature pixel (4 for P2, ...), else None.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


def check_feature_names(
    names: Sequence[str], input_shape: Mapping[str, "ShapeSpec"], *, knob: str, hint: str = ""
) -> list[str]:
    """Return ``names`` as a list if every one is a key of ``input_shape``; else a :class:`ConfigError`.

    Args:
        knob: what to call the names in the message, e.g. ``"RPN.in_features"``.
        hint: appended to the message (how to make more features available).
    """
    hint = f" ({hint})" if hint else ""
    if not names:
        raise ConfigError(f"{knob} is empty; the available features are {list(input_shape)}{hint}")
    for name in names:
        if name not in input_shape:
            raise ConfigError(
                f"{knob} has {name!r}, which is not an available feature.{did_you_mean(name, input_shape)} "
                f"Available: {list(input_shape)}{hint}."
            )
    return list(names)
