"""Typed containers: Boxes, Instances, ImageList, BitMasks, PolygonMasks."""

from framework.structures.boxes import Boxes, pairwise_iou

__all__ = ["Boxes", "pairwise_iou"]
