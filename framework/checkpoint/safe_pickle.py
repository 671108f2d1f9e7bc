"""Unpickle plain data only: containers, numbers, strings, bytes and numpy arrays.

``pickle.load`` calls whatever callable a file names (``os.system``, ``builtins.eval``, ...), so
opening an untrusted ``.pkl`` can run code. :func:`safe_load` resolves only the few globals that
plain data and numpy arrays need, and refuses any other with an :class:`UnsafePickleError` naming
the file and the global. Dicts, lists, tuples, strings, numbers and bytes are pickle opcodes and
need no global at all.
"""

from __future__ import annotations

import collections
import pickle
from typing import IO, Any, Callable

from framework.errors import InputError

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "safe_load"]


def _multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _numeric() -> Any:
    try:
        from numpy._core import numeric
    except ImportError:
        from numpy.core import numeric
    return numeric


def _numpy(name: str) -> Callable[[], Any]:
    return lambda: getattr(__import__("numpy"), name)


def _builtin(name: str) -> Callable[[], Any]:
    import builtins

    return lambda: getattr(builtins, name)


def _codecs_encode() -> Any:
    import _codecs

    return _codecs.encode


#: ``module.name`` -> how to get it. numpy arrays pickle as ``_reconstruct(ndarray, ...)`` plus a
#: dtype (``_frombuffer`` under protocol 5), numpy scalars as ``scalar(dtype, bytes)``; bytes written
#: with protocol 2 (and Python-2 era arrays read with ``encoding="latin1"``) go through
#: ``_codecs.encode``. The ``numpy.core`` names are those of files written with numpy 1.x.
ALLOWED_GLOBALS: dict[str, Callable[[], Any]] = {
    **{f"{pkg}.multiarray._reconstruct": lambda: _multiarray()._reconstruct for pkg in ("numpy.core", "numpy._core")},
    **{f"{pkg}.multiarray.scalar": lambda: _multiarray().scalar for pkg in ("numpy.core", "numpy._core")},
    **{f"{pkg}.numeric._frombuffer": lambda: _numeric()._frombuffer for pkg in ("numpy.core", "numpy._core")},
    "numpy.ndarray": _numpy("ndarray"),
    "numpy.dtype": _numpy("dtype"),
    "_codecs.encode": _codecs_encode,
    "collections.OrderedDict": lambda: collections.OrderedDict,
    **{f"builtins.{name}": _builtin(name) for name in ("set", "frozenset", "bytearray", "complex")},
}


class UnsafePickleError(InputError, pickle.UnpicklingError):
    """A pickle names a global that :func:`safe_load` does not admit (it could run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, filename: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles say __builtin__; pickle's own find_class (not called here) would map it.
        qualified = f"{'builtins' if module == '__builtin__' else module}.{name}"
        get = ALLOWED_GLOBALS.get(qualified)
        if get is None:
            raise UnsafePickleError(
                f"{self._filename}: refusing to load the global {qualified}, which the file names: unpickling it "
                "could run code. A weights file may hold only dicts, lists, tuples, sets, numbers, strings, bytes "
                f"and numpy arrays (allowed globals: {', '.join(sorted(ALLOWED_GLOBALS))}). If you trust the "
                "file, load it with pickle yourself and re-save only its arrays."
            )
        return get()


def safe_load(file: IO[bytes], *, filename: str, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` admitting only :data:`ALLOWED_GLOBALS`.

    Args:
        file: a binary file object positioned at the pickle.
        filename: named in errors.
        encoding: how Python 2 ``str`` objects are decoded; ``latin1`` keeps the bytes of Python 2
            era numpy arrays (Detectron / MSRA ImageNet files) intact.
    Raises:
        UnsafePickleError: the pickle names any other global.
    """
    return _RestrictedUnpickler(file, filename=filename, encoding=encoding).load()
