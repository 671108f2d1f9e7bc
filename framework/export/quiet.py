"""Keep what torch and onnxscript print while they export out of the terminal, so that a failed
export is one message (the :class:`~framework.errors.ExportError` naming the module and the op).

torch.export and the ONNX exporter report a failure on several channels before raising: their
loggers (a partial graph, guard traces), Python warnings, ``print`` and C++ writes to the
process's file descriptors 1 and 2. :func:`captured_output` collects all of them; the caller logs
the text at DEBUG (``framework-export --verbose`` shows it), so nothing is lost.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

__all__ = ["CapturedOutput", "captured_output", "log_captured"]

#: The loggers whose records are collected instead of printed (their children propagate to them).
CAPTURED_LOGGERS = ("torch", "onnxscript", "onnx_ir")


class CapturedOutput:
    """What was printed inside :func:`captured_output`; ``text`` is filled when the block ends."""

    def __init__(self) -> None:
        self.text = ""


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("[%(name)s %(levelname)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot be formatted must not hide the export's own error
            self.lines.append(f"[{record.name}] {record.msg!r}")


@contextlib.contextmanager
def _fd_redirected(fd: int, target: int) -> Iterator[None]:
    """Point file descriptor ``fd`` at ``target`` for the block (C++ writes included)."""
    saved = os.dup(fd)
    try:
        os.dup2(target, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@contextlib.contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """Collect the loggers of :data:`CAPTURED_LOGGERS`, warnings, Python's ``sys.stdout`` /
    ``sys.stderr`` and file descriptors 1 and 2 for the block; ``.text`` holds them all afterwards,
    in that order of channels (each channel in order)."""
    captured = CapturedOutput()
    handler = _ListHandler()
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    python_out = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as fd_file, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for lg in loggers:
            lg.handlers, lg.propagate = [handler], False
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # flush what was written before, so it is not captured
                stream.flush()
        try:
            with _fd_redirected(1, fd_file.fileno()), _fd_redirected(2, fd_file.fileno()), \
                    contextlib.redirect_stdout(python_out), contextlib.redirect_stderr(python_out):
                yield captured
        finally:
            for lg, (handlers, propagate) in zip(loggers, saved):
                lg.handlers, lg.propagate = handlers, propagate
            fd_file.seek(0)
            parts = [*handler.lines,
                     *(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip() for w in caught),
                     python_out.getvalue().rstrip(), fd_file.read().decode(errors="replace").rstrip()]
            captured.text = "\n".join(p for p in parts if p)


def log_captured(logger: logging.Logger, what: str, captured: CapturedOutput) -> None:
    """Log what ``what`` printed, at DEBUG (``framework-export --verbose`` shows it)."""
    if captured.text:
        logger.debug(f"{what} printed:\n{captured.text}")
