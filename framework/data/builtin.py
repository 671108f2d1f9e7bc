"""Datasets registered out of the box (all lazily: nothing is read or generated at import time).

* ``synthetic_train`` / ``synthetic_val``: the generated shapes dataset of
  :mod:`framework.data.synthetic`, created in the cache folder on first use.
* ``coco_2017_train`` / ``coco_2017_val``: COCO 2017 under ``$FRAMEWORK_DATASETS`` (default
  ``./datasets``), laid out as ``coco/annotations/instances_{train,val}2017.json`` and
  ``coco/{train,val}2017/``.

Validation splits keep images without annotations (as detectron2's test loader does); training
splits drop them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .catalog import default_thing_colors, register_dataset
from .coco import DatasetError, load_coco_json
from .synthetic import SYNTHETIC_CATEGORIES, ensure_builtin_synthetic

__all__ = ["register_builtin_datasets", "COCO_CATEGORIES", "datasets_root"]

#: The 80 COCO thing categories: (dataset id, name), ids ascending. Known without reading the
#: json, so that ``get_metadata("coco_2017_train")`` is instant.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)

_COCO_SPLITS = {"coco_2017_train": "train2017", "coco_2017_val": "val2017"}


def datasets_root() -> Path:
    """``$FRAMEWORK_DATASETS`` (default ``./datasets``), absolute; read at call time."""
    return Path(os.environ.get("FRAMEWORK_DATASETS", "datasets")).expanduser().resolve()


def _category_metadata(categories: list[tuple[int, str]]) -> dict[str, Any]:
    return {
        "thing_classes": [name for _, name in categories],
        "thing_dataset_id_to_contiguous_id": {cat_id: i for i, (cat_id, _) in enumerate(categories)},
        "thing_colors": default_thing_colors(len(categories)),
        "evaluator_type": "coco",
    }


@dataclasses.dataclass(frozen=True)
class _SyntheticLoader:
    split: str

    def __call__(self) -> list[dict]:
        json_file, image_root = ensure_builtin_synthetic()[self.split]
        return load_coco_json(json_file, image_root, dataset_name=f"synthetic_{self.split}",
                              keep_empty=self.split == "val", strict=True)[0]


@dataclasses.dataclass(frozen=True)
class _SyntheticMetadata:
    """Generates the dataset if needed, so that ``json_file`` exists for the evaluator."""

    split: str

    def __call__(self) -> dict[str, Any]:
        json_file, image_root = ensure_builtin_synthetic()[self.split]
        categories = [(c["id"], c["name"]) for c in SYNTHETIC_CATEGORIES]
        return {**_category_metadata(categories), "json_file": str(json_file), "image_root": str(image_root)}


def _coco_paths(name: str) -> tuple[Path, Path]:
    split_dir = _COCO_SPLITS[name]
    coco = datasets_root() / "coco"
    return coco / "annotations" / f"instances_{split_dir}.json", coco / split_dir


@dataclasses.dataclass(frozen=True)
class _Coco2017Loader:
    name: str

    def __call__(self) -> list[dict]:
        json_file, image_root = _coco_paths(self.name)
        missing = [str(p) for p in (json_file, image_root) if not p.exists()]
        if missing:
            raise DatasetError(
                f"Dataset {self.name!r} needs COCO 2017 at {datasets_root() / 'coco'}, but {missing} do not exist. "
                f"Download it from https://cocodataset.org (annotations/instances_*2017.json, train2017/, val2017/), "
                f"or set $FRAMEWORK_DATASETS to the folder that contains 'coco/'."
            )
        dicts, meta = load_coco_json(json_file, image_root, dataset_name=self.name, keep_empty=self.name.endswith("_val"))
        expected = [name for _, name in COCO_CATEGORIES]
        if meta["thing_classes"] != expected:
            raise DatasetError(f"{json_file}: its categories are not the 80 COCO 2017 categories "
                               f"(got {len(meta['thing_classes'])}: {meta['thing_classes'][:5]}...)")
        return dicts


@dataclasses.dataclass(frozen=True)
class _Coco2017Metadata:
    name: str

    def __call__(self) -> dict[str, Any]:
        json_file, image_root = _coco_paths(self.name)
        return {**_category_metadata(list(COCO_CATEGORIES)), "json_file": str(json_file), "image_root": str(image_root)}


def register_builtin_datasets() -> None:
    """Register the built-in datasets (idempotent)."""
    for split in ("train", "val"):
        register_dataset(f"synthetic_{split}", _SyntheticLoader(split), _SyntheticMetadata(split))
    for name in _COCO_SPLITS:
        register_dataset(name, _Coco2017Loader(name), _Coco2017Metadata(name))
