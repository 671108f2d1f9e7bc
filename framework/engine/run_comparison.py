"""Compare runs: group the jobs that differ only in ``seed``, and tell whether the difference between
two groups exceeds the seed spread.

A **run** is a run directory of ``tools/train_net.py``: its final metrics in ``metrics.json``
(``{"iteration": ..., "segm/AP": ..., "bbox/AP-<class>": ..., "bbox/dAP-cls": ...}``), its composed
config in ``.hydra/config.yaml`` (Hydra's, interpolations kept) or ``config.yaml`` (resolved), its
command-line overrides in ``.hydra/overrides.yaml``. A **sweep** (a multirun root) is a folder whose
sub-folders are runs; its failed or unfinished jobs (no ``metrics.json``) are left out with a note.

**Groups**: runs whose composed configs are equal once ``seed`` is taken out (the top-level key,
every key whose value is the interpolation ``${seed}``, and in a resolved config every key named
``seed`` equal to it), and ``resume`` (it does not change what is trained). A group is labelled by
the overrides its runs share apart from the seed and those common to all runs (else by the config
keys that tell it apart).

**Statistics** per group and metric: the mean and the *sample* standard deviation (``n - 1`` in
the denominator) over the group's runs; NaN values (a metric undefined in a run) are left out.

**The rule**: the difference ``mean_B - mean_A`` of a metric between groups A and B *exceeds the
spread* when ``|mean_B - mean_A| > std_A + std_B``, i.e. when the mean +- std bars of the two
groups do not overlap; otherwise it is *within the spread* (not significant). With fewer than 2
values in either group the spread is unknown and the difference is not judged. This is a plain
heuristic, not a hypothesis test; docs/evaluation.md gives how often it calls a difference when
there is none (about 8% with 3 seeds per group, under normal noise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from framework.errors import InputError

__all__ = ["RunComparisonError", "Run", "Group", "Stat", "Difference", "Comparison", "read_run", "find_runs",
           "group_runs", "compare_groups", "exceeds_spread", "METRICS_FILE"]

METRICS_FILE = "metrics.json"
#: Config keys that do not change what a run computes (besides the seed).
IGNORED_KEYS = ("resume",)


class RunComparisonError(InputError):
    """Runs that cannot be compared: a folder that is not a run or a sweep, a run without metrics,
    runs evaluated on different test sets, no seed spread at all. The message names the folder or
    file and what is wrong."""


@dataclass(frozen=True)
class Run:
    """One run directory, as compared.

    Attributes:
        path: the run directory.
        seed: its ``seed`` (``None`` if its config has none).
        metrics: the flat final metrics of ``metrics.json`` (``"segm/AP"``: percent), without
            ``iteration`` and other entries that are not numbers.
        config: the composed config without the seed (and ``resume``), flattened to dotted keys:
            what grouping compares.
        overrides: the command-line overrides other than the seed and ``hydra.*`` (a label).
        test_set: the test set it was evaluated on (``dataset.test`` of the resolved config).
    """

    path: Path
    seed: Optional[int]
    metrics: dict[str, float]
    config: dict[str, Any]
    overrides: tuple[str, ...]
    test_set: str


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RunComparisonError(f"'{path}' is not valid YAML: {e}") from e


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _without_seed(config: Mapping[str, Any], *, resolved: bool) -> tuple[dict[str, Any], Optional[int]]:
    flat = _flatten(config)
    seed = flat.get("seed")
    kept = {}
    for key, value in flat.items():
        last = key.rsplit(".", 1)[-1]
        if key == "seed" or key.split(".")[0] in IGNORED_KEYS or key == "hydra" or key.startswith("hydra."):
            continue
        if isinstance(value, str) and value.replace(" ", "") == "${seed}":
            continue
        if resolved and last == "seed" and value == seed:
            continue
        kept[key] = value
    return kept, (int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None)


def read_run(path: Union[str, Path]) -> Run:
    """Read a run directory (see the module docstring).

    Raises:
        RunComparisonError: no such folder, no ``metrics.json`` (the run did not finish), no config,
            or files that are not what a run writes; each message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunComparisonError(f"not a folder: '{path}'")
    metrics_file = path / METRICS_FILE
    resolved_file, composed_file = path / "config.yaml", path / ".hydra" / "config.yaml"
    if not metrics_file.is_file():
        what = "a run that did not finish (or failed)" if resolved_file.is_file() else "not a run directory"
        raise RunComparisonError(f"'{path}' has no {METRICS_FILE} ({what}): it holds a run's final metrics, written "
                                 "when training ends")
    try:
        raw = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as e:
        raise RunComparisonError(f"'{metrics_file}' is not valid json: {e}") from e
    if not isinstance(raw, Mapping):
        raise RunComparisonError(f"'{metrics_file}' must hold a json object of metrics, got {type(raw).__name__}")
    metrics = {str(k): float(v) if v is not None else math.nan for k, v in raw.items()
               if "/" in str(k) and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))}
    if not metrics:
        raise RunComparisonError(f"'{metrics_file}' holds no metrics (keys like 'segm/AP'): the run never evaluated")
    if not resolved_file.is_file() and not composed_file.is_file():
        raise RunComparisonError(f"'{path}' has neither config.yaml nor .hydra/config.yaml: without its config it "
                                 "cannot be grouped with the runs that differ from it only in seed")
    resolved = _load_yaml(resolved_file) if resolved_file.is_file() else None
    composed = _load_yaml(composed_file) if composed_file.is_file() else None
    for file, content in ((resolved_file, resolved), (composed_file, composed)):
        if content is not None and not isinstance(content, Mapping):
            raise RunComparisonError(f"'{file}' is not a config (a YAML mapping)")
    config, seed = _without_seed(composed if composed is not None else resolved, resolved=composed is None)
    test = (resolved if resolved is not None else composed).get("dataset", {}).get("test")
    test_set = json.dumps(test, sort_keys=True) if test is not None else "(unknown: no dataset.test)"
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides: tuple[str, ...] = ()
    if overrides_file.is_file():
        listed = _load_yaml(overrides_file) or []
        overrides = tuple(str(o) for o in listed if not str(o).lstrip("+~").startswith(("seed=", "hydra.", "resume=")))
    return Run(path=path, seed=seed, metrics=metrics, config=config, overrides=overrides, test_set=test_set)


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file() or (path / METRICS_FILE).is_file()


def _job_order(path: Path) -> tuple[int, Any]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_runs(paths: Sequence[Union[str, Path]]) -> tuple[list[Run], list[str]]:
    """The runs of ``paths`` (run directories and sweep roots), and notes on the sweeps' jobs left
    out (failed or unfinished).

    Raises:
        RunComparisonError: a path that is neither a run nor a folder of runs, a run directory
            named directly that cannot be read, or nothing to compare.
    """
    runs: list[Run] = []
    notes: list[str] = []
    for given in map(Path, paths):
        if not given.exists():
            raise RunComparisonError(f"no such run directory or sweep: '{given}'")
        if _is_run(given):
            runs.append(read_run(given))
            continue
        jobs = sorted((p for p in given.iterdir() if p.is_dir() and _is_run(p)), key=_job_order) if given.is_dir() else []
        if not jobs:
            raise RunComparisonError(f"'{given}' is neither a run directory (no config.yaml / {METRICS_FILE}) nor a sweep "
                                     "(no sub-folder is one)")
        for job in jobs:
            try:
                runs.append(read_run(job))
            except RunComparisonError as e:
                notes.append(f"left out: {e}")
    if not runs:
        raise RunComparisonError(f"no finished run in {', '.join(repr(str(p)) for p in paths)}" +
                                 (f" ({'; '.join(notes)})" if notes else ""))
    tests = {}
    for run in runs:
        tests.setdefault(run.test_set, run.path)
    if len(tests) > 1:
        (a, path_a), (b, path_b) = list(tests.items())[:2]
        raise RunComparisonError(f"the runs were evaluated on different test sets, so their metrics do not compare: "
                                 f"'{path_a}' on {a} but '{path_b}' on {b}")
    return runs, notes


@dataclass
class Group:
    """Runs equal but for their seed. ``key``: "A", "B", ... in order of first appearance;
    ``label``: what tells the group apart (its overrides)."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[Optional[int]]:
        return [r.seed for r in self.runs]

    def values(self, metric: str) -> list[float]:
        """The metric's finite values over the runs (a run without it, or with NaN, is left out)."""
        return [r.metrics[metric] for r in self.runs if metric in r.metrics and math.isfinite(r.metrics[metric])]


def _shared_overrides(runs: Sequence[Run]) -> list[str]:
    """The overrides every run of ``runs`` has, in the first run's order."""
    return [o for o in runs[0].overrides if all(o in r.overrides for r in runs[1:])]


def _label(members: list[Run], groups: list[list[Run]]) -> str:
    """What tells ``members`` apart from the other groups: its shared overrides less those every
    run of every group has; else (overrides do not tell the groups apart) the config keys that do."""
    everywhere = set(_shared_overrides([r for g in groups for r in g]))
    labels = [" ".join(o for o in _shared_overrides(g) if o not in everywhere) for g in groups]
    label = " ".join(o for o in _shared_overrides(members) if o not in everywhere)
    if label and labels.count(label) == 1:
        return label
    keys = sorted({k for g in groups for k in g[0].config})
    differing = [k for k in keys if len({json.dumps(g[0].config.get(k), sort_keys=True, default=str) for g in groups}) > 1]
    shown = [f"{k}={members[0].config.get(k)}" for k in differing[:4]]
    return " ".join(shown) + (" ..." if len(differing) > 4 else "") if shown else "(the only configuration)"


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """The runs grouped by config without the seed, groups in order of first appearance."""
    buckets: dict[str, list[Run]] = {}
    for run in runs:
        buckets.setdefault(json.dumps(run.config, sort_keys=True, default=str), []).append(run)
    members = list(buckets.values())
    keys = [chr(ord("A") + k) if k < 26 else f"G{k + 1}" for k in range(len(members))]
    return [Group(key=key, label=_label(m, members), runs=m) for key, m in zip(keys, members)]


@dataclass(frozen=True)
class Stat:
    """A metric over a group's runs: ``n`` finite values, their mean and sample std (NaN if n < 2; n - 1 denominator)."""

    n: int
    mean: float
    std: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stat":
        n = len(values)
        mean = math.fsum(values) / n if n else math.nan
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else math.nan
        return cls(n=n, mean=mean, std=std, values=tuple(values))


def exceeds_spread(a: Stat, b: Stat) -> Optional[bool]:
    """The rule of the module docstring: ``|mean_b - mean_a| > std_a + std_b``; ``None`` (not
    judged) when either group has fewer than 2 values."""
    if a.n < 2 or b.n < 2:
        return None
    return abs(b.mean - a.mean) > a.std + b.std


@dataclass(frozen=True)
class Difference:
    """``mean_B - mean_A`` of one metric and whether it exceeds the spread (``None``: not judged)."""

    metric: str
    delta: float
    exceeds: Optional[bool]


@dataclass
class Comparison:
    """Groups, their statistics per metric, and each group's differences from the baseline group.

    Attributes:
        groups: the groups (``groups[baseline]`` is the reference).
        stats: ``{group key: {metric: Stat}}`` for every metric of :attr:`metrics`.
        differences: ``{group key: [Difference per metric]}`` for every group but the baseline.
        metrics: the compared metrics, in report order: summary metrics, then per category
            (``<task>/AP-<class>``), then per error type (``<task>/dAP-<type>``).
        notes: runs left out and metrics not in every run.
    """

    groups: list[Group]
    baseline: int
    stats: dict[str, dict[str, Stat]]
    differences: dict[str, list[Difference]]
    metrics: list[str]
    notes: list[str]

    @property
    def primary(self) -> list[str]:
        """The headline metrics present: ``segm/AP`` and ``bbox/AP``."""
        return [m for m in ("segm/AP", "bbox/AP") if m in self.metrics]


#: Error types in the order of the error breakdown's table (framework.evaluation.error_report).
_ERROR_ORDER = ("cls", "loc", "both", "dupe", "bkg", "miss", "FP", "FN")


def _metric_order(name: str) -> tuple[int, str, int, str]:
    """Summary metrics (segm first), then per category, then per error type (in the breakdown's order), then the rest."""
    task, _, metric = name.partition("/")
    task = "" if task == "segm" else task  # the primary task first
    summary = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if metric in summary:
        return (0, task, summary.index(metric), "")
    if metric.startswith("AP-"):
        return (1, task, 0, metric)
    if metric.startswith("dAP-"):
        kind = metric[len("dAP-"):]
        return (2, task, _ERROR_ORDER.index(kind) if kind in _ERROR_ORDER else len(_ERROR_ORDER), kind)
    return (3, task, 0, metric)


def compare_groups(runs: Sequence[Run], *, baseline: int = 0, notes: Sequence[str] = ()) -> Comparison:
    """Group ``runs`` and compare every group with ``groups[baseline]`` on every metric the runs
    have (a metric missing in some runs is compared over the runs that have it, with a note).

    Raises:
        RunComparisonError: every group has a single run (no spread can be estimated), naming
            the runs; or ``baseline`` is not a group index.
    """
    groups = group_runs(runs)
    if not 0 <= baseline < len(groups):
        raise RunComparisonError(f"baseline group {baseline} does not exist: there are {len(groups)} group(s) "
                                 f"({', '.join(g.key for g in groups)}), numbered from 0")
    if all(len(g.runs) < 2 for g in groups):
        listed = ", ".join(f"'{g.runs[0].path}' (seed {g.runs[0].seed})" for g in groups[:4])
        raise RunComparisonError(
            f"every configuration has a single run ({listed}{', ...' if len(groups) > 4 else ''}): no seed spread to "
            "judge a difference against; run each with several seeds, e.g. -m seed=1,2,3")
    notes = list(notes)
    single = [g for g in groups if len(g.runs) < 2]
    for g in single:
        notes.append(f"group {g.key} has a single run ('{g.runs[0].path}'): its spread is unknown, its differences "
                     "are not judged")
    names = sorted({m for r in runs for m in r.metrics}, key=_metric_order)
    partial = [m for m in names if any(m not in r.metrics for r in runs)]
    if partial:
        notes.append(f"{len(partial)} metric(s) not in every run, compared over the runs that have them: "
                     f"{', '.join(partial[:6])}{', ...' if len(partial) > 6 else ''}")
    stats = {g.key: {m: Stat.of(g.values(m)) for m in names} for g in groups}
    base = groups[baseline].key
    differences = {
        g.key: [Difference(m, stats[g.key][m].mean - stats[base][m].mean, exceeds_spread(stats[base][m], stats[g.key][m]))
                for m in names]
        for g in groups if g.key != base
    }
    return Comparison(groups=groups, baseline=baseline, stats=stats, differences=differences, metrics=names,
                      notes=notes)
