"""A table comparing the jobs of a sweep, written at the sweep's root after every job.

A Hydra callback (configs/train.yaml: ``hydra.callbacks.sweep_summary``). Each job of a multirun
leaves ``job_status.json`` in its folder (status, wall time, error); after each job the summary is
rebuilt from every job folder of the sweep, so it is complete even when a job fails (Hydra then
stops before ``on_multirun_end``) and when the jobs ran in other processes (SLURM, joblib):

* ``summary.md``: one row per job: number, status, the overrides that tell it apart from the
  others (those all jobs share are listed above the table), wall time, the main metrics;
* ``summary.csv`` and ``summary.json``: the same with every final metric of ``metrics.json``;
* when some jobs differ only in ``seed`` (``-m seed=1,2,3 ...``): the jobs grouped as
  ``tools/compare_runs.py`` groups them (:mod:`framework.engine.run_comparison`), the same tables
  appended to ``summary.md`` (mean +- sample std per group, each group's difference from the first
  one and whether it exceeds the seed spread) and ``comparison.md`` / ``.json`` / ``.png`` beside it.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

__all__ = ["SweepSummary", "collect_jobs", "write_summary"]

STATUS_FILE = "job_status.json"
#: Metrics shown in the markdown table (all of them go to the CSV and JSON).
MAIN_METRICS = ("segm/AP", "segm/AP50", "bbox/AP", "bbox/AP50")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per job folder of ``sweep_dir`` that has a status: num, status, overrides, seconds,
    error, metrics; sorted by job number."""
    jobs = []
    for status_file in sweep_dir.glob(f"*/{STATUS_FILE}"):
        job = json.loads(status_file.read_text())
        metrics_file = status_file.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        job["metrics"] = {k: v for k, v in metrics.items() if "/" in k}
        job["folder"] = status_file.parent.name
        jobs.append(job)
    return sorted(jobs, key=lambda j: j["num"])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value).replace("|", "\\|")


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """(Re)write ``summary.md``, ``summary.csv`` and ``summary.json`` in ``sweep_dir``; return the jobs."""
    jobs = collect_jobs(sweep_dir)
    metric_keys = sorted({k for j in jobs for k in j["metrics"]})
    shown = [k for k in MAIN_METRICS if k in metric_keys]
    # the table shows what tells the jobs apart; the overrides they share go above it
    common = [o for o in jobs[0]["overrides"] if all(o in j["overrides"] for j in jobs)] if len(jobs) > 1 else []
    header = ["job", "status", "overrides", "time (s)", *shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for j in jobs:
        status = j["status"] if not j.get("error") else f"{j['status']}: {j['error']}"
        own = " ".join(o for o in j["overrides"] if o not in common)
        row = [j["folder"], status, own, j["seconds"], *(j["metrics"].get(k) for k in shown)]
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    shared = f"Every job: `{' '.join(common)}`\n\n" if common else ""
    pooled = _seeds_pooled(sweep_dir)
    (sweep_dir / "summary.md").write_text(f"# Sweep {sweep_dir}\n\n{shared}" + "\n".join(lines) + "\n" + pooled)
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "status", "error", "overrides", "seconds", *metric_keys])
        for j in jobs:
            writer.writerow([j["folder"], j["status"], j.get("error") or "", " ".join(j["overrides"]), j["seconds"],
                             *(j["metrics"].get(k, "") for k in metric_keys)])
    (sweep_dir / "summary.json").write_text(json.dumps(jobs, indent=2, sort_keys=True))
    return jobs


def _seeds_pooled(sweep_dir: Path) -> str:
    """The comparison of the sweep's groups of jobs equal but for the seed (written as
    ``comparison.*``), as markdown for ``summary.md``; ``""`` when no two jobs differ only in seed."""
    from framework.engine.comparison_report import comparison_markdown, write_comparison
    from framework.engine.run_comparison import RunComparisonError, compare_groups, find_runs, group_runs

    try:
        runs, notes = find_runs([sweep_dir])
        if all(len(g.runs) < 2 for g in group_runs(runs)):
            return ""
        comparison = compare_groups(runs, notes=notes)
    except RunComparisonError as e:  # e.g. jobs on different test sets: the per-job table still stands
        return f"\nNo comparison of seeds: {e}\n"
    title = "Seeds pooled (as tools/compare_runs.py)"
    write_comparison(comparison, sweep_dir, title=title)
    return "\n" + comparison_markdown(comparison, title=title).replace("\n## ", "\n### ").replace("# ", "## ", 1)


class SweepSummary(Callback):
    """Write each job's status, and the sweep's summary table after every job (multirun only)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started[str(config.hydra.runtime.output_dir)] = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        started = self._started.pop(str(job_dir), None)
        failed = job_return.status == JobStatus.FAILED
        status = {
            "num": int(config.hydra.job.num),
            "status": "failed" if failed else "completed",
            "error": _first_line(job_return._return_value) if failed else None,
            "overrides": list(job_return.overrides or []),
            "seconds": None if started is None else round(time.time() - started, 1),
        }
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / STATUS_FILE).write_text(json.dumps(status, indent=2))
        write_summary(Path(str(config.hydra.sweep.dir)))
