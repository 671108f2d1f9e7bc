"""The evaluator protocol and the inference loop that feeds it.

An evaluator splits its work in two (as mmengine's ``BaseMetric`` does): ``process`` turns each batch of
model outputs into something small (e.g. COCO result dicts on CPU) and keeps it; ``evaluate`` gathers
what every rank kept and computes the metrics once, on the main process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

import torch
from tabulate import tabulate
from torch import nn
from tqdm import tqdm

from framework.utils import comm

if TYPE_CHECKING:
    from framework.data.skipping import SkippedImage

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "print_csv_format",
    "results_table",
    "flatten_results",
    "PRIMARY_METRICS",
    "primary_metric",
]

logger = logging.getLogger(__name__)

#: What ``evaluate`` returns: task name (e.g. "bbox") -> metric name (e.g. "AP50") -> value.
EvalResults = dict[str, dict[str, float]]

#: Where :func:`inference_on_dataset` puts the number of test images its loader left out
#: (``results["data"]["skipped_test_images"]``; ``data/skipped_test_images`` in the flat metrics).
#: Not ``skipped_images``: that is the training loader's count, in the same event storage.
SKIPPED_TASK, SKIPPED_METRIC = "data", "skipped_test_images"


class DatasetEvaluator:
    """Base class of evaluators: accumulate over a dataset with ``process``, then ``evaluate`` once.

    The inference loop calls ``reset()`` once, ``process(inputs, outputs)`` for every batch,
    ``process_skipped(images)`` when its loader reports the images it left out (``bad_data=skip``), then
    ``evaluate()``. In distributed runs every rank processes its own shard; ``evaluate`` gathers the
    shards and returns the metrics on the main process and ``None`` elsewhere. An evaluator must not
    change global state (RNG, logging setup, default dtype...).
    """

    def reset(self) -> None:
        """Forget everything processed so far (called before each pass over the dataset)."""

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Consume one batch.

        Args:
            inputs: the per-image dicts given to the model (with "image_id", "height", "width", ...).
            outputs: the model's per-image outputs, e.g. ``{"instances": Instances}``, same order.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement process(inputs, outputs)")

    def process_skipped(self, images: Sequence["SkippedImage"]) -> None:
        """Be told which images of this rank's shard the loader left out, unread (possibly none).

        Called once per pass, after the last ``process`` and before ``evaluate``, on every rank
        with that rank's images, when the loader reports them
        (:class:`framework.data.skipping.ReportsSkippedImages`, e.g. ``build_test_loader(...,
        bad_data="skip")``). Each has ``file_name``, ``image_id`` and ``reason``.

        The default does nothing, which is right for an evaluator whose metrics depend only on
        the images it processed. One that compares with ground truth over the whole dataset must
        leave these images out of it (as :class:`COCOEvaluator <framework.evaluation.COCOEvaluator>`
        does), or their objects count as missed; in distributed runs it gathers them in
        ``evaluate`` together with the rest.
        """

    def evaluate(self) -> Optional[EvalResults]:
        """Metrics over everything processed: ``{task: {metric: value}}``; ``None`` on non-main ranks."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def metric_names(self, output_fields: Optional[Collection[str]]) -> Optional[set[str]]:
        """The flat metric names (``"bbox/AP"``, as :func:`flatten_results` writes them) that
        ``evaluate`` will return for a model whose per-image ``Instances`` carry ``output_fields``
        (e.g. ``{"pred_boxes", "scores", "pred_classes", "pred_masks"}``; ``None`` when the model does
        not say). ``None`` (the default) means "not known before evaluating".

        A run checks its configuration against these before training: a best-checkpoint metric
        that no evaluator produces is an error at startup, not after hours of training.
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one: each sees every batch, and their result dicts are merged.

    Args:
        evaluators: the evaluators; their result dicts must not share a task name (a ``KeyError``
            naming the task and both evaluators is raised otherwise, rather than one silently winning).
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for evaluator in self.evaluators:
            evaluator.process(inputs, outputs)

    def process_skipped(self, images: Sequence["SkippedImage"]) -> None:
        for evaluator in self.evaluators:
            evaluator.process_skipped(images)

    def evaluate(self) -> Optional[EvalResults]:
        merged: EvalResults = {}
        owner: dict[str, str] = {}
        for evaluator in self.evaluators:
            # Every evaluator's evaluate() runs on every rank: they may contain collectives.
            result = evaluator.evaluate()
            if not comm.is_main_process() or result is None:
                continue
            for task, metrics in result.items():
                if task in merged:
                    raise KeyError(
                        f"DatasetEvaluators: both {owner[task]} and {type(evaluator).__name__} "
                        f"returned results for task {task!r}; give each evaluator distinct task names"
                    )
                merged[task] = metrics
                owner[task] = type(evaluator).__name__
        return merged if comm.is_main_process() else None

    def metric_names(self, output_fields: Optional[Collection[str]]) -> Optional[set[str]]:
        """The union of the evaluators' metric names; ``None`` when any of them cannot say."""
        names: set[str] = set()
        for evaluator in self.evaluators:
            own = evaluator.metric_names(output_fields)
            if own is None:
                return None
            names |= own
        return names


@contextlib.contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore its previous train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _sync_device() -> None:
    # CUDA kernels are asynchronous: without a sync the timings would measure only the launches.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def inference_on_dataset(
    model: Union[nn.Module, Any],
    data_loader: Iterable[list[dict[str, Any]]],
    evaluator: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None],
    *,
    warmup_iters: int = 5,
    log_period_s: float = 5.0,
) -> EvalResults:
    """Run ``model`` over ``data_loader``, feed every batch to ``evaluator``, and return its results.

    The model runs in eval mode under ``torch.inference_mode()``; its train/eval mode is restored
    afterwards. A tqdm bar shows progress on the main process when stderr is a terminal; otherwise a
    progress line is logged every ``log_period_s`` seconds. The first ``warmup_iters`` batches (cuDNN
    autotuning, allocator growth) are left out of the reported timings, which are per image.

    Images the loader left out: a loader that implements
    :class:`~framework.data.skipping.ReportsSkippedImages` (``build_test_loader(...,
    bad_data="skip")``) is asked after the pass which images it left out (unreadable files); the
    evaluator is told (:meth:`DatasetEvaluator.process_skipped`, each rank its own), and the
    results get their number over all ranks (see Returns), with a warning on the main process.

    Args:
        model: a callable taking a batch (list of per-image dicts) and returning one output dict per image.
        data_loader: an iterable of batches; its ``len`` (when it has one) sizes the bar and the warmup.
        evaluator: one evaluator, a list of them (combined with :class:`DatasetEvaluators`), or ``None``
            to only run and time the model.
        warmup_iters: batches excluded from timing (at most ``len(data_loader) - 1``, so that
            something is timed).
        log_period_s: seconds between progress log lines when the bar is not shown.

    Returns:
        ``evaluator.evaluate()``: ``{task: {metric: value}}`` on the main process, ``{}`` on the
        others (an evaluator returns ``None`` there). When the loader reports the images it left
        out, the main process's results also hold ``{"data": {"skipped_test_images": n}}`` (``n``
        over all ranks, ``0.0`` included), which a run's metrics show as ``data/skipped_test_images``.

    Raises:
        KeyError: an evaluator's results already hold ``data/skipped_test_images``.
    """
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, Sequence):
        evaluator = DatasetEvaluators(evaluator)
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    num_warmup = min(warmup_iters, total - 1) if total else warmup_iters
    main = comm.is_main_process()
    show_bar = main and sys.stderr.isatty()
    logger.info("Start inference on %s batches", total if total is not None else "an unknown number of")

    evaluator.reset()
    num_images = 0  # images seen after warmup
    data_time = compute_time = eval_time = 0.0
    timed_start = time.perf_counter()
    last_log = timed_start
    with contextlib.ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.inference_mode())
        bar = stack.enter_context(tqdm(total=total, desc="inference", unit="batch", disable=not show_bar))

        wait_start = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            if idx == num_warmup:
                # Timing starts when this batch began loading, so data time is counted too.
                timed_start = wait_start
                num_images = 0
                data_time = compute_time = eval_time = 0.0
            start = time.perf_counter()
            data_time += start - wait_start
            outputs = model(inputs)
            _sync_device()
            after_model = time.perf_counter()
            compute_time += after_model - start
            evaluator.process(inputs, outputs)
            wait_start = time.perf_counter()
            eval_time += wait_start - after_model
            if idx >= num_warmup:
                num_images += len(inputs)
            bar.update(1)

            if main and not show_bar and wait_start - last_log >= log_period_s:
                last_log = wait_start
                done = idx + 1 - num_warmup
                per_batch = (wait_start - timed_start) / done if done > 0 else float("nan")
                eta = f", ETA {_fmt_duration(per_batch * (total - idx - 1))}" if total and done > 0 else ""
                logger.info(
                    "Inference done %d/%s batches. Data %.4f s/img, model %.4f s/img, eval %.4f s/img%s",
                    idx + 1,
                    total if total is not None else "?",
                    data_time / max(num_images, 1),
                    compute_time / max(num_images, 1),
                    eval_time / max(num_images, 1),
                    eta,
                )

    total_time = time.perf_counter() - timed_start
    world = comm.get_world_size()
    if num_images > 0:
        logger.info(
            "Total inference time: %s (%.6f s/img per device, on %d devices), after %d warmup batches",
            _fmt_duration(total_time), total_time / num_images, world, num_warmup,
        )
        logger.info(
            "Total inference pure compute time: %s (%.6f s/img per device, on %d devices)",
            _fmt_duration(compute_time), compute_time / num_images, world,
        )
    else:
        logger.info("Inference finished: no batch after the %d warmup batches was timed", num_warmup)

    skipped = _report_skipped(data_loader, evaluator)
    results = evaluator.evaluate()
    # Non-main ranks get {} rather than None so that callers can index/iterate unconditionally.
    results = dict(results) if results is not None else {}
    if skipped is not None and main:
        if skipped:
            logger.warning("bad_data=skip: %d test image(s) could not be read and were left out of the evaluation "
                           "(each is named in a warning above)", skipped)
        task = dict(results.get(SKIPPED_TASK, {}))
        if SKIPPED_METRIC in task:
            raise KeyError(f"inference_on_dataset: the evaluator's results already hold "
                           f"'{SKIPPED_TASK}/{SKIPPED_METRIC}', where the number of test images the loader left out "
                           "goes; rename that metric")
        results[SKIPPED_TASK] = {**task, SKIPPED_METRIC: float(skipped)}
    return results


def _report_skipped(data_loader: Any, evaluator: DatasetEvaluator) -> Optional[int]:
    """Tell ``evaluator`` which images this rank's loader left out; their number over all ranks, or
    ``None`` when the loader does not report any (not a :class:`ReportsSkippedImages`, or strict).

    A collective when distributed: every rank calls it, whatever its loader.
    """
    from framework.data.skipping import ReportsSkippedImages

    images = data_loader.skipped_images() if isinstance(data_loader, ReportsSkippedImages) else None
    if images is not None:
        evaluator.process_skipped(images)
    counts = [n for n in comm.all_gather(None if images is None else len(images)) if n is not None]
    return sum(counts) if counts else None


def _important_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    # Per-category entries ("AP-person") would make the summary hundreds of columns wide.
    return {k: v for k, v in metrics.items() if "-" not in k}


def results_table(results: Mapping[str, Mapping[str, float]], *, digits: int = 3) -> str:
    """The summary metrics of ``results`` as a text table: one row per task, one column per metric.

    Per-category metrics (keys containing ``-``, e.g. ``AP-person``) are left out.

    Example::

        | task   |     AP |    AP50 |
        |:-------|-------:|--------:|
        | bbox   | 70.000 | 100.000 |
        | segm   | 65.000 | 100.000 |
    """
    if not results:
        return "(no results)"
    # Tasks with the same metric names (bbox and segm) share a table; others get their own, so that
    # no column is half empty.
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for task, metrics in results.items():
        row = _important_metrics(metrics)
        groups.setdefault(tuple(row), []).append([task, *row.values()])
    return "\n".join(
        tabulate(rows, headers=["task", *names], tablefmt="pipe", floatfmt=f".{digits}f")
        for names, rows in groups.items()
    )


def print_csv_format(results: Mapping[str, Mapping[str, float]], *, digits: int = 4) -> str:
    """Log ``results`` as comma-separated lines that paste into a spreadsheet, and return that text.

    For each task: ``Task: <task>``, a line of metric names, a line of values (``digits`` decimals,
    ``nan`` where undefined). Per-category metrics are left out.
    """
    lines = []
    for task, metrics in results.items():
        row = _important_metrics(metrics)
        lines.append(f"Task: {task}")
        lines.append(",".join(row.keys()))
        lines.append(",".join("nan" if math.isnan(v) else f"{v:.{digits}f}" for v in row.values()))
    text = "\n".join(lines)
    for line in lines:
        logger.info("copypaste: %s", line)
    return text


def flatten_results(results: Mapping[str, Any], *, sep: str = "/") -> dict[str, float]:
    """``{"bbox": {"AP": 38.0, "AP50": 59.0}}`` -> ``{"bbox/AP": 38.0, "bbox/AP50": 59.0}`` (any
    depth), every value a float; a value that is not a number raises ``TypeError`` naming its key."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            for sub, v in flatten_results(value, sep=sep).items():
                flat[f"{key}{sep}{sub}"] = v
            continue
        try:
            flat[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"evaluation results must be a nested dict of numbers; got {key!r}: {value!r}") from None
    return flat


#: The metric a run is judged by (best checkpoint, the value returned to sweepers), in order of
#: preference: mask AP when masks are evaluated, else box AP.
PRIMARY_METRICS = ("segm/AP", "bbox/AP")


def primary_metric(names: Collection[str]) -> Optional[str]:
    """The first of :data:`PRIMARY_METRICS` among ``names``, else ``None``."""
    return next((m for m in PRIMARY_METRICS if m in names), None)
