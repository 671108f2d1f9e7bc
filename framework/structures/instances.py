"""Instances: the per-image bag of per-object fields (boxes, scores, classes, masks...) of equal length."""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch

from framework.errors import did_you_mean
from framework.structures.size_checks import known_true

__all__ = ["Instances", "split_by_image"]


def _as_size(value: Any) -> Any:
    """``int(value)``, except for a symbolic size of a graph being exported (torch.SymInt), which
    ``int()`` would freeze to the traced example's value."""
    return value if isinstance(value, torch.SymInt) else int(value)


def _length(value: Any) -> Any:
    """``len(value)``, but a symbolic length (torch.export) stays symbolic: the builtin ``len``
    must return an int, which would freeze it to the traced example's count."""
    return value.__len__() if hasattr(value, "__len__") else len(value)


def _index_list(values: list, item: Any) -> list:
    """Index a plain Python list like a tensor: slice, bool mask or index tensor/list."""
    if isinstance(item, slice):
        return values[item]
    if isinstance(item, torch.Tensor):
        item = item.cpu()
        if item.dtype == torch.bool:
            if item.dim() != 1 or item.numel() != len(values):
                raise IndexError(f"a bool index must have shape ({len(values)},), got {tuple(item.shape)}")
            item = item.nonzero().squeeze(1)
        return [values[i] for i in item.reshape(-1).tolist()]
    if isinstance(item, (list, tuple)):
        if len(item) > 0 and all(isinstance(i, bool) for i in item):
            return _index_list(values, torch.tensor(item))
        return [values[int(i)] for i in item]
    raise IndexError(f"cannot index a list field with {item!r}")


class Instances:
    """Per-object fields of one image, all of the same length N.

    ``Instances((h, w), pred_boxes=Boxes(...), scores=torch.tensor(...))``. Fields are read and written
    as attributes (``inst.scores``) or with ``get`` / ``set``; a field may be a tensor (first dim N),
    ``Boxes``, ``BitMasks``, ``PolygonMasks``, a list of length N, or any object with ``__len__`` and
    ``__getitem__`` (and ``cat`` / ``to`` for ``Instances.cat`` / ``Instances.to``).

    Attributes:
        image_size: (height, width) of the image the objects live in.
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        self._image_size = (_as_size(image_size[0]), _as_size(image_size[1]))
        self._fields: dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    # -- field access --------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, i.e. for fields (or typos).
        fields = self.__dict__.get("_fields")
        if fields is None or name not in fields:
            known = list(fields) if fields else []
            raise AttributeError(
                f"Instances has no field {name!r}; fields are {known}." + did_you_mean(name, known)
            )
        return fields[name]

    def set(self, name: str, value: Any) -> None:
        """Add or replace a field. Raises ValueError if its length differs from the other fields'."""
        if name == "image_size":
            raise ValueError("'image_size' is fixed at construction and cannot be a field")
        n = _length(value)
        others = {k: v for k, v in self._fields.items() if k != name}
        if others:
            expected = _length(next(iter(others.values())))
            # two symbolic counts (torch.export) that cannot be told apart pass
            if known_true(n != expected):
                raise ValueError(
                    f"field {name!r} has length {n}, but the Instances hold {expected} objects "
                    f"(fields {list(others)})"
                )
        self._fields[name] = value

    def get(self, name: str) -> Any:
        """The field ``name`` (AttributeError naming the known fields if absent)."""
        return getattr(self, name)

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete a field. Raises KeyError naming the known fields if absent."""
        if name not in self._fields:
            known = list(self._fields)
            raise KeyError(f"cannot remove field {name!r}: fields are {known}." + did_you_mean(name, known))
        del self._fields[name]

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            super().__delattr__(name)
        else:
            self.remove(name)

    def get_fields(self) -> dict[str, Any]:
        """The name -> value dict of all fields (the live dict: modifying it skips the length check)."""
        return self._fields

    # -- container protocol --------------------------------------------------------------------
    def __len__(self) -> int:
        for value in self._fields.values():
            return _length(value)
        return 0

    def __iter__(self):
        raise NotImplementedError("Instances is not iterable; index it or iterate over a field")

    def __getitem__(self, item: Any) -> "Instances":
        """Select objects from every field: int (keeps a length-1 Instances), slice, bool mask (N,), or index tensor."""
        if not isinstance(item, torch.Tensor) and hasattr(item, "__index__"):  # int, numpy integer
            item = item.__index__()
            n = len(self)
            if not -n <= item < n:
                raise IndexError(f"Instances index {item} out of range for {n} objects")
            item = slice(item % n, item % n + 1)
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            out.set(name, _index_list(value, item) if isinstance(value, list) else value[item])
        return out

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """A new Instances with every field that has ``.to`` moved/cast (lists are kept as is)."""
        out = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            out.set(name, value)
        return out

    @staticmethod
    def cat(instance_lists: Sequence["Instances"]) -> "Instances":
        """Concatenate Instances of the same image with the same field names into one.

        Tensors are joined with ``torch.cat``, lists are chained, other fields use ``type(field).cat``.
        """
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        if not all(isinstance(i, Instances) for i in instance_lists):
            raise TypeError(f"Instances.cat got {[type(i).__name__ for i in instance_lists]}")
        if len(instance_lists) == 1:
            return instance_lists[0]
        first = instance_lists[0]
        for k, other in enumerate(instance_lists[1:], start=1):
            if other.image_size != first.image_size:
                raise ValueError(
                    f"Instances.cat: item {k} has image_size {other.image_size}, item 0 has {first.image_size}"
                )
            if set(other._fields) != set(first._fields):
                raise ValueError(
                    f"Instances.cat: item {k} has fields {sorted(other._fields)}, item 0 has {sorted(first._fields)}"
                )
        out = Instances(first.image_size)
        for name, value in first._fields.items():
            values = [i._fields[name] for i in instance_lists]
            if isinstance(value, torch.Tensor):
                joined = torch.cat(values, dim=0)
            elif isinstance(value, list):
                joined = list(itertools.chain.from_iterable(values))
            elif hasattr(type(value), "cat"):
                joined = type(value).cat(values)
            else:
                raise TypeError(f"Instances.cat: field {name!r} of type {type(value).__name__} has no cat()")
            out.set(name, joined)
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {v}" for k, v in self._fields.items())
        h, w = self._image_size
        return f"Instances(num_instances={len(self)}, image_height={h}, image_width={w}, fields=[{fields}])"

    __str__ = __repr__


def split_by_image(x: torch.Tensor, instances: Sequence[Instances]) -> list[torch.Tensor]:
    """``list(x.split([len(i) for i in instances]))``: the rows of ``x`` (sum of the counts, ...)
    that belong to each image, in order.

    The counts are read as the instances' (possibly symbolic) lengths, not with the builtin ``len``:
    while torch.export records a model, a count of detections is a symbolic size that ``len``
    would have to turn into an int. One image takes all rows without a split.
    """
    if len(instances) == 1:
        return [x]
    return list(x.split([i.__len__() for i in instances]))
