"""Datasets: the catalog, the COCO-json loader and the built-in synthetic dataset.

Importing this package registers the built-in datasets (lazily; see :mod:`framework.data.builtin`).
"""

from __future__ import annotations

from .builtin import register_builtin_datasets
from .catalog import (
    Metadata,
    get_dataset,
    get_metadata,
    list_datasets,
    register_coco_instances,
    register_dataset,
    unregister_dataset,
)
from .coco import DROP_REASONS, DatasetDicts, DatasetError, check_images, coco_ground_truth, load_coco_json

__all__ = [
    "DatasetError",
    "Metadata",
    "check_images",
    "coco_ground_truth",
    "DatasetDicts",
    "DROP_REASONS",
    "get_dataset",
    "get_metadata",
    "list_datasets",
    "load_coco_json",
    "register_builtin_datasets",
    "register_coco_instances",
    "register_dataset",
    "unregister_dataset",
]

register_builtin_datasets()
