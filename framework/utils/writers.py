"""Writers (LOGGERS components): send what an :class:`~framework.utils.events.EventStorage` holds to
the console, a JSON lines file or TensorBoard (wandb and MLflow: :mod:`framework.utils.trackers`).

Each writer has ``write()`` (called periodically inside the storage's context, usually by the
``PeriodicWriter`` hook), ``log_run()`` / ``log_final()`` for what a run knows besides scalars (its
config and overrides at the start, its hyper-parameters and final metrics at the end) and
``close()``. Scalars already written are not written again, so calling ``write()`` twice for the
same iteration (e.g. at the last step and at the end of training) is safe.

A run builds the writers of its ``loggers`` config dict (``loggers.console``, ``loggers.json``,
``loggers.tensorboard``; ``+logger@loggers.wandb=WandbWriter`` adds one), offering each the runtime
arguments ``output_dir`` and ``max_iter``: a writer's signature takes those it needs.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from typing import Any

import torch

from framework.registry import LOGGERS
from framework.utils.events import get_event_storage

__all__ = ["EventWriter", "ConsoleWriter", "JSONWriter", "TensorboardWriter", "new_scalars"]

logger = logging.getLogger(__name__)


class EventWriter:
    """Base class: ``write()`` reads the current :func:`get_event_storage`; ``close()`` releases files."""

    def write(self) -> None:
        raise NotImplementedError

    def log_run(self, config: dict[str, Any], overrides: list[str], iteration: int) -> None:
        """Record the run's resolved ``config`` and command-line ``overrides`` (once, at the start)."""

    def log_final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's swept/overridden values against its final metrics (once, at the end;
        how runs of a sweep are compared)."""

    def close(self) -> None:
        pass


def new_scalars(storage: Any, window: int, written: dict[str, int]) -> dict[int, dict[str, float]]:
    """``{iteration: {name: value}}`` of the scalars put since they were last written, and mark them
    written in ``written`` (``{name: iteration}``).

    Tracked per name, not with one iteration watermark: evaluation metrics put at an iteration
    whose losses were already written (the final evaluation) must still be written.
    """
    by_iter: dict[int, dict[str, float]] = defaultdict(dict)
    for name, (value, itr) in storage.latest_with_smoothing_hint(window).items():
        if itr > written.get(name, -1):
            by_iter[itr][name] = value
            written[name] = itr
    return dict(sorted(by_iter.items()))


@LOGGERS.register()
class ConsoleWriter(EventWriter):
    """Log one line of training progress: ETA, iteration, losses, time, data time, lr, peak memory.

    Example line::

        eta: 0:12:05  iter: 199/90000  total_loss: 1.234  loss_cls: 0.5  time: 0.2100  data_time: 0.0100  lr: 0.02  max_mem: 5321M

    Args:
        max_iter: the number of training iterations, for the ETA.
        window: losses are the median, times the mean, over this many latest values.
    """

    def __init__(self, max_iter: int, *, window: int = 20) -> None:
        self._max_iter = max_iter
        self._window = window
        self._last_written_iter: int | None = None
        # Wall-clock fallback for the ETA when no "time" scalar exists (IterationTimer removed).
        self._last_write: tuple[int, float] | None = None

    def _eta_seconds(self, storage: Any, iteration: int) -> float | None:
        remaining = self._max_iter - iteration - 1
        try:
            eta = float(storage.history("time").median(1000)) * remaining
            storage.put_scalar("eta_seconds", eta, smoothing_hint=False)
            return eta
        except KeyError:
            pass
        now = time.perf_counter()
        eta = None
        if self._last_write is not None and iteration > self._last_write[0]:
            per_iter = (now - self._last_write[1]) / (iteration - self._last_write[0])
            eta = per_iter * remaining
        self._last_write = (iteration, now)
        return eta

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._last_written_iter:
            return
        self._last_written_iter = iteration
        histories = storage.histories()

        eta = self._eta_seconds(storage, iteration)
        parts = [f"eta: {datetime.timedelta(seconds=int(eta))}"] if eta is not None else []
        parts.append(f"iter: {iteration}/{self._max_iter}")
        # total_loss first, then the model's own losses by name.
        loss_names = sorted((k for k in histories if "loss" in k), key=lambda k: (k != "total_loss", k))
        parts += [f"{k}: {histories[k].median(self._window):.4g}" for k in loss_names]
        for key in ("time", "data_time"):
            if key in histories:
                parts.append(f"{key}: {histories[key].avg(self._window):.4f}")
        if "lr" in histories:
            parts.append(f"lr: {histories['lr'].latest():.5g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024 / 1024:.0f}M")
        logger.info("  ".join(parts))


@LOGGERS.register()
class JSONWriter(EventWriter):
    """Append one JSON object per iteration to a file: ``{"iteration": 19, "total_loss": 1.2, ...}``.

    Each ``write()`` adds a line for every iteration that got new scalars since the previous
    write (losses smoothed over ``window``; metrics and lr as put). The file is opened in append
    mode so a resumed run continues the same file.

    Args:
        output_dir: the run directory (runtime); the file is ``output_dir/filename``.
        filename: the ``.jsonl`` file's name, or a path relative to ``output_dir`` (its folder is created).
        window: smoothing window for scalars put with ``smoothing_hint=True``.
    """

    def __init__(self, output_dir: str, *, filename: str = "metrics.jsonl", window: int = 20) -> None:
        path = os.path.join(output_dir, filename)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._file = open(path, "a")
        self._window = window
        self._written: dict[str, int] = {}

    def write(self) -> None:
        storage = get_event_storage()
        for itr, scalars in new_scalars(storage, self._window, self._written).items():
            self._file.write(json.dumps({"iteration": itr, **scalars}, sort_keys=True) + "\n")
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:  # e.g. some network file systems
            pass

    def close(self) -> None:
        self._file.close()


@LOGGERS.register()
class TensorboardWriter(EventWriter):
    """Write scalars, images, histograms, texts and PR curves to TensorBoard event files in the run directory.

    Images, histograms, texts and PR curves are cleared from the storage once written. ``log_run`` adds the
    resolved config and the overrides as texts; ``log_final`` one row of the HParams tab (the
    overridden values against the final metrics), so the jobs of a sweep compare side by side.

    Args:
        output_dir: folder for the ``events.out.tfevents.*`` files (runtime: the run directory).
        window: smoothing window for scalars put with ``smoothing_hint=True``.
    """

    def __init__(self, output_dir: str, *, window: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter  # import is slow; only pay for it when used

        self.log_dir = output_dir
        self._writer = SummaryWriter(output_dir)
        self._window = window
        self._written: dict[str, int] = {}

    def write(self) -> None:
        storage = get_event_storage()
        for itr, scalars in new_scalars(storage, self._window, self._written).items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, itr)
        for name, img, itr in storage.images:
            self._writer.add_image(name, img, itr)
        storage.clear_images()
        for params in storage.histograms:
            self._writer.add_histogram_raw(**params)
        storage.clear_histograms()
        for name, text, itr in storage.texts:
            self._writer.add_text(name, text, itr)
        storage.clear_texts()
        for curve in storage.pr_curves:
            self._writer.add_pr_curve_raw(curve["tag"], curve["tp"], curve["fp"], curve["tn"], curve["fn"],
                                          curve["precision"], curve["recall"], curve["global_step"],
                                          num_thresholds=len(curve["tp"]))
        storage.clear_pr_curves()
        self._writer.flush()

    @property
    def summary_writer(self):
        """The underlying ``SummaryWriter``, for what the storage does not carry."""
        return self._writer

    def log_run(self, config: dict[str, Any], overrides: list[str], iteration: int) -> None:
        import yaml

        self._writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "\n```", iteration)
        if overrides:
            self._writer.add_text("overrides", "\n".join(f"- `{o}`" for o in overrides), iteration)

    def log_final(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        # Metric names with '-' (per-category APs) would flood the HParams table.
        shown = {f"hparam/{k}": v for k, v in metrics.items() if "-" not in k}
        if shown:
            self._writer.add_hparams(hparams or {"run": os.path.basename(os.path.abspath(self.log_dir))}, shown, run_name=".")

    def close(self) -> None:
        self._writer.close()
