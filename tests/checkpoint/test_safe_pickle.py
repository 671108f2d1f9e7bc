"""Loading never runs code from a file: the restricted unpickler (.pkl) and weights_only (.pth)."""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from framework.checkpoint import Checkpointer, UnsafePickleError, load_checkpoint_file, load_weights
from framework.checkpoint.safe_pickle import safe_load


class _Touch:
    """Unpickling it would call ``pathlib.Path.touch`` / ``os.system`` / ``builtins.open`` on a path."""

    def __init__(self, how: str, target: pathlib.Path) -> None:
        self.how, self.target = how, target

    def __reduce__(self):
        if self.how == "os.system":
            return os.system, (f"touch {self.target}",)
        if self.how == "builtins.open":
            return open, (str(self.target), "w")
        return pathlib.Path.touch, (self.target,)


# The global each payload names, as pickle writes it: os.system is posix.system on Linux, open is
# io.open; Path.touch is pathlib.Path.touch with protocol 4 (pickle's default) but getattr(Path, "touch")
# with protocol 2 (torch.save's), and it is getattr that is refused.
_GLOBALS = {"os.system": os.system.__module__ + ".system", "builtins.open": "io.open", "pathlib": "pathlib.Path.touch"}
_GLOBALS_PTH = {**_GLOBALS, "pathlib": "getattr"}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_numpy_arrays_load(protocol):
    data = {
        "model": collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), i=np.array([1, 2], np.int64)),
        "scalar": np.float32(1.5),
        "meta": ("x", 3, 2.5, None, True, b"bytes", {1, 2}, frozenset([3]), [1j]),
    }
    loaded = safe_load(io.BytesIO(pickle.dumps(data, protocol=protocol)), filename="x.pkl")
    assert np.array_equal(loaded["model"]["w"], data["model"]["w"]) and loaded["model"]["w"].dtype == np.float32
    assert loaded["model"]["i"].dtype == np.int64 and isinstance(loaded["model"], collections.OrderedDict)
    assert loaded["scalar"] == np.float32(1.5) and loaded["meta"] == data["meta"]


class _Py2Array:
    """Pickles as Python 2 wrote numpy arrays: the data as a (latin1) str, not bytes."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):
        a = self.array
        _reconstruct = a.__reduce__()[0]  # numpy's own, under numpy 1 and 2
        return _reconstruct, (np.ndarray, (0,), b"b"), (1, a.shape, a.dtype, False, a.tobytes().decode("latin1"))


def test_python2_era_pickles_load():
    # MSRA / Detectron files: protocol 2, numpy 1.x module names, array data as str (read with latin1).
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = pickle.dumps({"w": _Py2Array(w)}, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in blob and b"_codecs" in blob
    loaded = safe_load(io.BytesIO(blob), filename="py2.pkl")
    assert np.array_equal(loaded["w"], w) and loaded["w"].dtype == np.float32


@pytest.mark.parametrize("how", ["os.system", "builtins.open", "pathlib"])
def test_malicious_pkl_is_refused_everywhere(tmp_path, how):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(1)}, "x": _Touch(how, target)}))
    loaders = [
        lambda: safe_load(open(path, "rb"), filename=str(path)),
        lambda: load_checkpoint_file(str(path)),
        lambda: load_weights(nn.Linear(1, 1), str(path)),
        lambda: Checkpointer(nn.Linear(1, 1)).load(str(path)),
    ]
    for load in loaders:
        with pytest.raises(UnsafePickleError) as e:
            load()
        message = str(e.value)
        assert str(path) in message and f"global {_GLOBALS[how]}," in message and "numpy arrays" in message
    assert not target.exists()


@pytest.mark.parametrize("how", ["os.system", "builtins.open", "pathlib"])
def test_malicious_pth_is_refused_everywhere(tmp_path, how):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": nn.Linear(1, 1).state_dict(), "x": _Touch(how, target)}, path)
    for load in (
        lambda: load_checkpoint_file(str(path)),
        lambda: load_weights(nn.Linear(1, 1), str(path)),
        lambda: Checkpointer(nn.Linear(1, 1)).load(str(path)),
    ):
        with pytest.raises(UnsafePickleError) as e:
            load()
        message = str(e.value)
        assert str(path) in message and f"global {_GLOBALS_PTH[how]}," in message and "weights_only" in message
    assert not target.exists()
