"""Typed containers: Boxes, Instances, ImageList, BitMasks, PolygonMasks."""

from framework.structures.boxes import Boxes, pairwise_iou
from framework.structures.image_list import ImageList
from framework.structures.instances import Instances, split_by_image
from framework.structures.masks import BitMasks, PolygonMasks, polygons_to_bitmask, rasterize_polygons_within_box

__all__ = [
    "BitMasks",
    "Boxes",
    "ImageList",
    "Instances",
    "PolygonMasks",
    "pairwise_iou",
    "polygons_to_bitmask",
    "rasterize_polygons_within_box",
    "split_by_image",
]
