"""MapDataset: a list of dataset dicts, each mapped (read, augmented, turned into a model input) when read."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from .draws import DatasetDraws

__all__ = ["MapDataset", "DatasetMappingError"]


class DatasetMappingError(RuntimeError):
    """The mapper failed on one dataset item; the message names the item's file and the cause."""


class MapDataset(Dataset):
    """``dataset_list[i]`` mapped by ``mapper``, computed when item i is read.

    Args:
        dataset_list: dataset dicts.
        mapper: dict -> model input dict (e.g. :class:`framework.data.mapper.DatasetMapper`). A
            mapper whose ``takes_draws`` attribute is true (one with a mixing augmentation) is
            also handed the other samples it may draw: ``mapper(d, draws=...)`` (see :meth:`map`).
        serialize: store the dicts as one pickled byte buffer instead of Python objects. Forked
            DataLoader workers otherwise duplicate the whole list in memory as reference counts
            are touched (detectron2 does the same).

    A failing mapper raises (never silently skips the item): errors that do not already name the
    image file are re-raised as :class:`DatasetMappingError` naming it.
    """

    def __init__(self, dataset_list: Sequence[dict[str, Any]], mapper: Callable[..., Any], *, serialize: bool = True) -> None:
        if not callable(mapper):
            raise TypeError(f"MapDataset: mapper must be callable, got {mapper!r}")
        self.mapper = mapper
        self._serialized = serialize
        if serialize:
            blobs = [np.frombuffer(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for d in dataset_list]
            self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
            self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)
        else:
            self._list = list(dataset_list)

    def __len__(self) -> int:
        return len(self._ends) if self._serialized else len(self._list)

    @property
    def takes_draws(self) -> bool:
        """Whether the mapper draws other samples (then :meth:`map` needs ``draws``)."""
        return bool(getattr(self.mapper, "takes_draws", False))

    def raw(self, idx: int) -> dict[str, Any]:
        """The unmapped dataset dict ``idx`` (a fresh copy when serialized)."""
        if not self._serialized:
            return self._list[idx]
        if not -len(self) <= idx < len(self):
            raise IndexError(f"MapDataset index {idx} out of range for {len(self)} items")
        idx %= len(self)
        start = 0 if idx == 0 else int(self._ends[idx - 1])
        return pickle.loads(self._buffer[start:int(self._ends[idx])].tobytes())

    def __getitem__(self, idx: int) -> Any:
        return self.map(idx)

    def map(self, idx: int, *, draws: Optional[DatasetDraws] = None) -> Any:
        """Item ``idx`` mapped; ``draws`` (the other samples a mixing augmentation may take) is
        passed on to a mapper that ``takes_draws`` and is ignored otherwise."""
        d = self.raw(idx)
        file_name = d.get("file_name") if isinstance(d, dict) else None
        try:
            out = self.mapper(d, draws=draws) if self.takes_draws else self.mapper(d)
        except Exception as e:
            if file_name is not None and str(file_name) in str(e):
                raise
            raise DatasetMappingError(f"mapping dataset item {idx} (file {file_name}, image_id="
                                      f"{d.get('image_id') if isinstance(d, dict) else None}) failed: "
                                      f"{type(e).__name__}: {e}") from e
        if out is None:
            raise DatasetMappingError(f"the mapper {self.mapper!r} returned None for dataset item {idx} (file {file_name}); "
                                      "a mapper must return a dict (filter the dataset dicts beforehand instead)")
        return out
