"""Backbone: the base class of feature extractors (image batch -> named feature maps)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from torch import Tensor, nn

from framework.layers.shape_spec import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """Base class of backbones.

    A subclass implements :meth:`forward` and either fills ``_out_features`` (names, in order),
    ``_out_feature_channels`` and ``_out_feature_strides`` (dicts keyed by name) in its
    constructor, or overrides :meth:`output_shape`.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @abstractmethod
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Args:
            x: images (B, C, H, W), normalised; H and W divisible by :attr:`size_divisibility`.

        Returns:
            feature name -> feature map (B, C_f, H / stride_f, W / stride_f).
        """

    @property
    def size_divisibility(self) -> int:
        """Input H and W must be divisible by this (0: no constraint); images are padded to it."""
        return 0

    @property
    def padding_constraints(self) -> dict[str, int]:
        """detectron2's name for the same constraint: ``{"size_divisibility": n}`` when n > 0, else empty.

        A backbone with more (detectron2's ``square_size``) overrides this; the padding in
        GeneralizedRCNN reads :attr:`size_divisibility`.
        """
        return {"size_divisibility": self.size_divisibility} if self.size_divisibility > 0 else {}

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Feature name -> ShapeSpec(channels, stride) of each output of :meth:`forward`."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
