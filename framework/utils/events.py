"""EventStorage: the per-iteration metrics store that models and hooks write into, and writers flush.

Anything running inside the training loop (the model's forward, a hook, the trainer) can call
:func:`get_event_storage` and record scalars, images, histograms or texts for the current
iteration without being handed a logger. Writers (:mod:`framework.utils.writers`) read the
storage periodically and send its content to the console, a JSON file or TensorBoard.

Example::

    with EventStorage(start_iter=0) as storage:
        for storage.iter in range(10):
            get_event_storage().put_scalar("loss", 0.5)
        storage.history("loss").median(5)  # 0.5
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from fvcore.common.history_buffer import HistoryBuffer

from framework.errors import did_you_mean

__all__ = ["EventStorage", "get_event_storage", "current_event_storage", "put_scalars", "HistoryBuffer"]

_CURRENT_STORAGE_STACK: list["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost :class:`EventStorage` being used as a context manager.

    Raises:
        RuntimeError: when called outside any ``with EventStorage(...)`` block.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() was called outside a 'with EventStorage(...)' block; "
            "the trainer opens one around training, wrap your own loop the same way"
        )
    return _CURRENT_STORAGE_STACK[-1]


def current_event_storage() -> "EventStorage | None":
    """The innermost :class:`EventStorage` in use, or ``None`` outside any (inference, tools, tests):
    for code that records what it has when it runs inside training (an evaluator's curves and
    images) and does nothing otherwise."""
    return _CURRENT_STORAGE_STACK[-1] if _CURRENT_STORAGE_STACK else None


class EventStorage:
    """Scalars (with history), images, histograms, texts and PR curves recorded during training.

    Args:
        start_iter: the iteration number the storage starts at; ``iter`` is stamped on
            every value put, and the trainer advances it before each step.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self.iter: int = start_iter
        self._history: dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        # name -> (value, iteration) of the last put, so writers can skip values already written
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._vis_data: list[tuple[str, torch.Tensor, int]] = []
        self._histograms: list[dict[str, Any]] = []
        self._texts: list[tuple[str, str, int]] = []
        self._pr_curves: list[dict[str, Any]] = []
        self._current_prefix = ""

    # ------------------------------------------------------------------ scalars
    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True, *, cur_iter: int | None = None) -> None:
        """Record a scalar for the current iteration (or ``cur_iter``).

        Args:
            name: key; prefixed by the active :meth:`name_scope`.
            value: a number or a 0-dim tensor (converted with ``float``).
            smoothing_hint: whether writers should smooth this series (median over a window,
                e.g. losses) or show the raw latest value (e.g. learning rate, eval metrics).
                It must stay the same for a given name.
        """
        name = self._current_prefix + name
        itr = self.iter if cur_iter is None else int(cur_iter)
        value = float(value)
        self._history[name].update(value, itr)
        self._latest_scalars[name] = (value, itr)
        existing = self._smoothing_hints.get(name)
        if existing is None:
            self._smoothing_hints[name] = smoothing_hint
        elif existing != smoothing_hint:
            raise ValueError(
                f"scalar {name!r} was put with smoothing_hint={existing} before and {smoothing_hint} now; "
                "use one value per name"
            )

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: float) -> None:
        """Record several scalars at once: ``put_scalars(loss_a=0.5, loss_b=1.0)``."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def history(self, name: str) -> HistoryBuffer:
        """The :class:`HistoryBuffer` of scalar ``name`` (``latest()``, ``median(w)``, ``avg(w)``, ...)."""
        if name not in self._history:
            raise KeyError(
                f"no scalar named {name!r} in the EventStorage.{did_you_mean(name, self._history)} "
                f"Recorded: {', '.join(sorted(self._history)) or '(none)'}."
            )
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        """All scalar histories, by name."""
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}`` for every scalar."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but series put with ``smoothing_hint=True`` give the median of
        their last ``window_size`` values instead of the raw latest value."""
        out = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = float(self._history[name].median(window_size))
            out[name] = (value, itr)
        return out

    def smoothing_hints(self) -> dict[str, bool]:
        """``{name: smoothing_hint}`` as given to :meth:`put_scalar`."""
        return dict(self._smoothing_hints)

    # ------------------------------------------------------------------ images, histograms, texts
    def put_image(self, img_name: str, img_tensor: torch.Tensor) -> None:
        """Record an image for TensorBoard.

        Args:
            img_tensor: ``(3, H, W)`` RGB (or ``(1, H, W)``), ``uint8`` in [0, 255] or float in [0, 1].
        """
        if img_tensor.dim() != 3:
            raise ValueError(f"put_image({img_name!r}) expects a (C, H, W) tensor, got shape {tuple(img_tensor.shape)}")
        self._vis_data.append((self._current_prefix + img_name, img_tensor.detach().cpu(), self.iter))

    def put_histogram(self, hist_name: str, hist_tensor: torch.Tensor, bins: int = 1000) -> None:
        """Record the histogram of the values of ``hist_tensor`` (any shape) with ``bins`` equal bins."""
        values = hist_tensor.detach().float().flatten()
        if values.numel() == 0:
            raise ValueError(f"put_histogram({hist_name!r}) got an empty tensor")
        lo, hi = values.min().item(), values.max().item()
        counts = torch.histc(values, bins=bins, min=lo, max=hi)
        # TensorBoard's raw histogram wants the right edge of each bin.
        limits = torch.linspace(lo, hi, steps=bins + 1, device=values.device)[1:]
        self._histograms.append(
            dict(
                tag=self._current_prefix + hist_name,
                min=lo,
                max=hi,
                num=len(values),
                sum=float(values.sum()),
                sum_squares=float((values**2).sum()),
                bucket_limits=limits.tolist(),
                bucket_counts=counts.tolist(),
                global_step=self.iter,
            )
        )

    def put_text(self, name: str, text: str) -> None:
        """Record a piece of text (e.g. a resolved config or an evaluation table) for TensorBoard."""
        self._texts.append((self._current_prefix + name, str(text), self.iter))

    def put_pr_curve(self, tag: str, *, tp: Any, fp: Any, tn: Any, fn: Any, precision: Any, recall: Any) -> None:
        """Record a precision-recall curve for TensorBoard's PR-curve dashboard (its raw form,
        ``SummaryWriter.add_pr_curve_raw``).

        Args:
            tp, fp, tn, fn, precision, recall: (N,) sequences, N in [2, 127], entry ``i`` at the
                threshold ``i / (N - 1)`` (TensorBoard's threshold axis, increasing).
        """
        arrays = {k: torch.as_tensor(v, dtype=torch.float64).flatten()
                  for k, v in dict(tp=tp, fp=fp, tn=tn, fn=fn, precision=precision, recall=recall).items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1 or not 2 <= lengths.pop() <= 127:
            raise ValueError(f"put_pr_curve({tag!r}): tp, fp, tn, fn, precision and recall must have one length in "
                             f"[2, 127] (TensorBoard's limit), got {[len(a) for a in arrays.values()]}")
        self._pr_curves.append({"tag": self._current_prefix + tag, **arrays, "global_step": self.iter})

    @property
    def images(self) -> list[tuple[str, torch.Tensor, int]]:
        """``[(name, (C, H, W) tensor, iteration)]`` put since the last :meth:`clear_images`."""
        return list(self._vis_data)

    @property
    def histograms(self) -> list[dict[str, Any]]:
        """Raw histogram records (``SummaryWriter.add_histogram_raw`` kwargs) not yet cleared."""
        return list(self._histograms)

    @property
    def texts(self) -> list[tuple[str, str, int]]:
        """``[(name, text, iteration)]`` put since the last :meth:`clear_texts`."""
        return list(self._texts)

    @property
    def pr_curves(self) -> list[dict[str, Any]]:
        """``[{"tag", "tp", "fp", "tn", "fn", "precision", "recall", "global_step"}]`` put since the last
        :meth:`clear_pr_curves` (arrays as float64 tensors)."""
        return list(self._pr_curves)

    def clear_pr_curves(self) -> None:
        """Forget the PR curves (see :meth:`clear_images`)."""
        self._pr_curves = []

    def clear_images(self) -> None:
        """Forget the images (a writer calls this after sending them, so memory stays bounded)."""
        self._vis_data = []

    def clear_histograms(self) -> None:
        """Forget the histograms (see :meth:`clear_images`)."""
        self._histograms = []

    def clear_texts(self) -> None:
        """Forget the texts (see :meth:`clear_images`)."""
        self._texts = []

    # ------------------------------------------------------------------ context
    @contextmanager
    def name_scope(self, prefix: str) -> Iterator[None]:
        """Prefix every name put inside the block with ``prefix/`` (scopes nest: ``a/b/name``)."""
        old = self._current_prefix
        self._current_prefix = old + prefix.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self, "EventStorage contexts exited out of order"
        _CURRENT_STORAGE_STACK.pop()


def put_scalars(*, smoothing_hint: bool = True, **scalars: float) -> None:
    """Record scalars in the current storage if there is one (training), else do nothing (inference, tests).

    Model code calls this for diagnostics (e.g. the number of positive anchors) so that the same
    forward runs inside and outside the trainer. ``smoothing_hint=False`` for counters, which
    writers should show as they are, not averaged over a window.
    """
    if _CURRENT_STORAGE_STACK:
        _CURRENT_STORAGE_STACK[-1].put_scalars(smoothing_hint=smoothing_hint, **scalars)


@contextmanager
def name_scope(prefix: str) -> Iterator[None]:
    """:meth:`EventStorage.name_scope` of the current storage if there is one, else nothing: model
    code that runs a part several times (a cascade's stages) keeps each run's scalars apart."""
    if not _CURRENT_STORAGE_STACK:
        yield
        return
    with _CURRENT_STORAGE_STACK[-1].name_scope(prefix):
        yield
