"""A catalog of named datasets: how to load each one, and its metadata (class names, colours, ...).

Registering is cheap and lazy: a dataset is a zero-argument ``loader`` returning dataset dicts (see
:mod:`framework.data.coco` for their format), called on every :func:`get_dataset`. Metadata is a
dict, or a zero-argument callable returning one when it can only be known lazily (e.g. the class
names stored in a json file).

Example::

    register_coco_instances("my_train", json_file="ann/train.json", image_root="images/")
    dicts = get_dataset("my_train")          # reads and validates the json now
    meta = get_metadata("my_train")          # meta.thing_classes, meta.num_classes, ...
"""

from __future__ import annotations

import colorsys
import copy
import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from framework.errors import ConfigError, did_you_mean

from .coco import DatasetError, load_coco_json, read_coco_categories

__all__ = [
    "Metadata",
    "register_dataset",
    "unregister_dataset",
    "get_dataset",
    "get_metadata",
    "list_datasets",
    "register_coco_instances",
    "default_thing_colors",
]

#: Metadata given at registration: a dict, or a callable producing one when first needed.
MetadataSource = Union[Mapping[str, Any], Callable[[], Mapping[str, Any]]]


def default_thing_colors(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic RGB colours: hues spaced by the golden ratio."""
    colors = []
    for i in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


@dataclasses.dataclass(frozen=True)
class Metadata:
    """What is known about a dataset besides its images.

    Attributes:
        name: the dataset's registered name.
        thing_classes: class names, indexed by contiguous category id (length K).
        thing_colors: one RGB colour per class (default: :func:`default_thing_colors`).
        thing_dataset_id_to_contiguous_id: dataset category id -> contiguous id in [0, K)
            (default: identity).
        json_file: the COCO json with the ground truth, used by the COCO evaluator.
        image_root: folder of the images.
        evaluator_type: which evaluator suits the dataset.
        extra: anything else a plugin needs (keypoint names, ...).
    """

    name: str
    thing_classes: list[str]
    thing_colors: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    thing_dataset_id_to_contiguous_id: dict[int, int] = dataclasses.field(default_factory=dict)
    json_file: str | None = None
    image_root: str | None = None
    evaluator_type: str = "coco"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"metadata of dataset {self.name!r}"
        classes = self.thing_classes
        if isinstance(classes, (str, bytes)) or not all(isinstance(c, str) for c in classes) or not classes:
            raise ConfigError(f"{where}: thing_classes must be a non-empty list of strings, got {classes!r}")
        object.__setattr__(self, "thing_classes", list(classes))
        k = len(classes)

        colors = list(self.thing_colors) or default_thing_colors(k)
        colors = [tuple(c) for c in colors]
        if len(colors) != k or not all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors):
            raise ConfigError(f"{where}: thing_colors must hold {k} RGB triples of ints in [0, 255], got {self.thing_colors!r}")
        object.__setattr__(self, "thing_colors", colors)

        try:
            id_map = {int(d): int(c) for d, c in dict(self.thing_dataset_id_to_contiguous_id).items()} or {i: i for i in range(k)}
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: thing_dataset_id_to_contiguous_id must map ints to ints ({e})") from e
        if sorted(id_map.values()) != list(range(k)):
            raise ConfigError(f"{where}: thing_dataset_id_to_contiguous_id must map {k} dataset ids one-to-one onto "
                              f"0..{k - 1} (one per thing class), got {id_map}")
        object.__setattr__(self, "thing_dataset_id_to_contiguous_id", id_map)
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "Metadata":
        """Build from a plain dict; an unknown key is an error naming the valid keys."""
        cls.check_keys(name, values)
        if "thing_classes" not in values:
            raise ConfigError(f"metadata of dataset {name!r} needs 'thing_classes'")
        return cls(name=name, **values)

    @classmethod
    def check_keys(cls, name: str, keys: Iterable[str]) -> None:
        """Raise a :class:`ConfigError` naming the valid keys if ``keys`` has an unknown one."""
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        for key in keys:
            if key not in fields:
                raise ConfigError(f"metadata of dataset {name!r}: unknown key {key!r}.{did_you_mean(key, fields)} "
                                  f"Valid keys: {fields} (put anything else under 'extra').")

    @property
    def num_classes(self) -> int:
        """K, the number of thing classes."""
        return len(self.thing_classes)

    @property
    def contiguous_id_to_dataset_id(self) -> dict[int, int]:
        """Contiguous id in [0, K) -> dataset category id (for writing COCO-format results)."""
        return {c: d for d, c in self.thing_dataset_id_to_contiguous_id.items()}

    def get(self, key: str, default: Any = None) -> Any:
        """Attribute or ``extra`` entry ``key``, else ``default`` (like detectron2's ``Metadata.get``)."""
        if key in self.extra:
            return self.extra[key]
        return getattr(self, key, default)


@dataclasses.dataclass
class _Entry:
    loader: Callable[[], list[dict]]
    metadata: MetadataSource


_DATASETS: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def register_dataset(name: str, loader: Callable[[], list[dict]], metadata: MetadataSource) -> None:
    """Register dataset ``name``: ``loader()`` returns its dataset dicts, ``metadata`` describes it.

    Registering the same name again with an equal loader and metadata is a no-op; with a different
    one it is an error (call :func:`unregister_dataset` first to replace it).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"A dataset name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise ConfigError(f"The loader of dataset {name!r} must be a zero-argument callable, got {loader!r}")
    if isinstance(metadata, Mapping):
        Metadata.from_dict(name, metadata)  # fail at registration, not at first use
        metadata = copy.deepcopy(dict(metadata))
    elif not callable(metadata):
        raise ConfigError(f"The metadata of dataset {name!r} must be a dict or a callable returning one, got {metadata!r}")
    with _LOCK:
        existing = _DATASETS.get(name)
        if existing is not None:
            if existing.loader == loader and existing.metadata == metadata:
                return
            raise ConfigError(f"Dataset {name!r} is already registered with a different loader or metadata "
                              f"(loader {existing.loader!r}). Pick another name, or call unregister_dataset({name!r}) first.")
        _DATASETS[name] = _Entry(loader, metadata)


def unregister_dataset(name: str) -> None:
    """Remove dataset ``name`` from the catalog (an error if it is not registered)."""
    with _LOCK:
        _lookup(name)
        del _DATASETS[name]


def _lookup(name: str) -> _Entry:
    entry = _DATASETS.get(name)
    if entry is None:
        names = sorted(_DATASETS)
        raise ConfigError(f"Unknown dataset {name!r}.{did_you_mean(name, names)} Registered datasets: {names}")
    return entry


def get_dataset(name: str) -> list[dict]:
    """Call the loader of dataset ``name`` and return its dataset dicts (a fresh list each call)."""
    entry = _lookup(name)
    dicts = entry.loader()
    if not isinstance(dicts, list) or not all(isinstance(d, dict) for d in dicts):
        raise DatasetError(f"The loader of dataset {name!r} ({entry.loader!r}) must return a list of dicts, "
                           f"got {type(dicts).__name__}")
    return dicts


def get_metadata(name: str) -> Metadata:
    """The :class:`Metadata` of dataset ``name`` (a lazy metadata callable is called here)."""
    entry = _lookup(name)
    values = entry.metadata() if callable(entry.metadata) else entry.metadata
    if not isinstance(values, Mapping):
        raise ConfigError(f"The metadata callable of dataset {name!r} must return a dict, got {type(values).__name__}")
    return Metadata.from_dict(name, copy.deepcopy(dict(values)))


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(_DATASETS)


@dataclasses.dataclass(frozen=True)
class CocoJsonLoader:
    """Loader of a COCO-json dataset (a dataclass so that re-registering the same files compares equal)."""

    json_file: str
    image_root: str
    dataset_name: str | None = None
    keep_empty: bool = False
    strict: bool = False
    expected_thing_classes: tuple[str, ...] | None = None

    def __call__(self) -> list[dict]:
        dicts, meta = load_coco_json(self.json_file, self.image_root, dataset_name=self.dataset_name,
                                     keep_empty=self.keep_empty, strict=self.strict)
        if self.expected_thing_classes is not None and tuple(meta["thing_classes"]) != self.expected_thing_classes:
            raise DatasetError(f"{self.json_file}: its categories (sorted by id) {meta['thing_classes']} differ from the "
                               f"thing_classes registered for dataset {self.dataset_name!r}: {list(self.expected_thing_classes)}")
        return dicts


@dataclasses.dataclass(frozen=True)
class CocoJsonMetadata:
    """Lazy metadata of a COCO-json dataset: class names are read from the json only if not given."""

    json_file: str
    image_root: str
    given: tuple[tuple[str, Any], ...] = ()

    def __call__(self) -> dict[str, Any]:
        given = dict(self.given)
        values: dict[str, Any] = {"json_file": self.json_file, "image_root": self.image_root, "evaluator_type": "coco"}
        if "thing_classes" not in given:
            values.update(read_coco_categories(self.json_file))
        values.update(given)
        return values


def register_coco_instances(
    name: str,
    *,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    keep_empty: bool = False,
    strict: bool = False,
) -> None:
    """Register a COCO instances json as dataset ``name``; it is read at :func:`get_dataset` time.

    Args:
        json_file, image_root: see :func:`framework.data.coco.load_coco_json` (made absolute now).
        metadata: extra metadata (e.g. ``thing_colors``). If it gives ``thing_classes``, they must
            match the json's categories sorted by id, and the json is not read for metadata.
        keep_empty: keep images without non-crowd annotations (use True for evaluation sets).
        strict: fail instead of warning when an annotation has to be dropped.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    given = dict(metadata or {})
    expected = tuple(given["thing_classes"]) if "thing_classes" in given else None
    loader = CocoJsonLoader(json_file, image_root, dataset_name=name, keep_empty=keep_empty, strict=strict,
                            expected_thing_classes=expected)
    Metadata.check_keys(name, given)
    if expected is not None:
        Metadata.from_dict(name, {"json_file": json_file, "image_root": image_root, **given})
    register_dataset(name, loader, CocoJsonMetadata(json_file, image_root, tuple(sorted(given.items()))))
