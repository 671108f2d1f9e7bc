"""The files of a comparison of runs (:mod:`framework.engine.run_comparison`): ``comparison.md`` (the
tables, also what ``tools/compare_runs.py`` prints), ``comparison.json`` (every number) and
``comparison.png`` (AP per group, mean +- sample std, each seed a dot)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

from framework.engine.run_comparison import Comparison, Difference, Stat

__all__ = ["COMPARISON_FILES", "RULE", "comparison_markdown", "comparison_chart", "comparison_dict", "write_comparison"]

COMPARISON_FILES = {"markdown": "comparison.md", "json": "comparison.json", "chart": "comparison.png"}
#: The significance rule, as the reports state it.
RULE = ("a difference B - A *exceeds the spread* when |mean_B - mean_A| > std_A + std_B (the mean +- std bars do "
        "not overlap; std: sample standard deviation over seeds, n - 1); otherwise it is *within* the spread, "
        "not significant. Not judged (n/a) when a group has fewer than 2 runs.")


def _stat(s: Stat) -> str:
    if s.n == 0:
        return "n/a"
    return f"{s.mean:.2f}" if s.n < 2 else f"{s.mean:.2f} +- {s.std:.2f}"


def _difference(d: Difference) -> str:
    if not math.isfinite(d.delta):
        return "n/a"
    verdict = {True: "**exceeds**", False: "within", None: "n/a"}[d.exceeds]
    return f"{d.delta:+.2f} {verdict}"


def _table(comparison: Comparison, metrics: list[str]) -> list[str]:
    base = comparison.groups[comparison.baseline].key
    others = [g.key for g in comparison.groups if g.key != base]
    head = ["metric", *(g.key for g in comparison.groups), *(f"{k} - {base}" for k in others)]
    lines = ["| " + " | ".join(head) + " |", "|:--|" + "--:|" * (len(head) - 1)]
    index = {k: {d.metric: d for d in ds} for k, ds in comparison.differences.items()}
    for m in metrics:
        cells = [m, *(_stat(comparison.stats[g.key][m]) for g in comparison.groups),
                 *(_difference(index[k][m]) for k in others)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def comparison_markdown(comparison: Comparison, *, title: str = "Comparison of runs") -> str:
    """The groups (runs, seeds, headline metrics as mean +- std), then per metric kind a table of
    every group's mean +- std and each group's difference from the baseline, marked by the rule."""
    groups = comparison.groups
    runs = sum(len(g.runs) for g in groups)
    lines = [f"# {title}", "", f"{runs} runs in {len(groups)} group(s) of runs equal but for `seed`; "
             "values are mean +- sample std over the group's runs (percent points).", ""]
    head = ["group", "runs", "seeds", *comparison.primary, "what differs"]
    lines += ["| " + " | ".join(head) + " |", "|:--|--:|:--|" + "--:|" * len(comparison.primary) + ":--|"]
    for g in groups:
        seeds = ", ".join("?" if s is None else str(s) for s in g.seeds)
        cells = [g.key, str(len(g.runs)), seeds, *(_stat(comparison.stats[g.key][m]) for m in comparison.primary),
                 g.label.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs: " + "; ".join(f"{g.key}: " + ", ".join(f"`{r.path}`" for r in g.runs) for g in groups), ""]
    if len(groups) > 1:
        lines += [f"Rule: {RULE}", ""]
    sections = [
        ("Summary metrics", [m for m in comparison.metrics if m.partition("/")[2] in ("AP", "AP50", "AP75", "APs", "APm", "APl")]),
        ("Per category (AP)", [m for m in comparison.metrics if m.partition("/")[2].startswith("AP-")]),
        ("Per error type (TIDE dAP: AP50 points lost to each error type, lower is better)",
         [m for m in comparison.metrics if m.partition("/")[2].startswith("dAP-")]),
    ]
    for name, metrics in sections:
        if metrics:
            lines += [f"## {name}", "", *_table(comparison, metrics), ""]
    if comparison.notes:
        lines += ["Notes:", "", *(f"- {n}" for n in comparison.notes), ""]
    return "\n".join(lines)


def comparison_chart(comparison: Comparison) -> Any:
    """A PIL image: per headline metric (``segm/AP``, ``bbox/AP``) one panel, per group its runs as
    dots and its mean +- sample std as an error bar; the footer spells out the group labels."""
    from framework.utils.charts import error_bar_panels

    panels = [(m, [(g.key, s.mean, s.std, s.values) for g in comparison.groups for s in [comparison.stats[g.key][m]]])
              for m in comparison.primary]
    footer = [f"{g.key}: {g.label} ({len(g.runs)} runs)" for g in comparison.groups]
    return error_bar_panels(panels, title="AP per group: mean +- sample std over seeds (dots: runs)", y_label="AP",
                            footer=footer)


def _finite(value: float) -> Any:
    return value if math.isfinite(value) else None


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """Everything as json-able data: groups (key, label, runs, seeds), per group and metric
    ``{n, mean, std, values}``, per other group and metric ``{delta, exceeds_spread}``, the rule."""
    return {
        "rule": RULE,
        "baseline": comparison.groups[comparison.baseline].key,
        "groups": [{"key": g.key, "label": g.label, "runs": [str(r.path) for r in g.runs], "seeds": g.seeds}
                   for g in comparison.groups],
        "stats": {k: {m: {"n": s.n, "mean": _finite(s.mean), "std": _finite(s.std), "values": list(s.values)}
                      for m, s in per.items()} for k, per in comparison.stats.items()},
        "differences": {k: {d.metric: {"delta": _finite(d.delta), "exceeds_spread": d.exceeds} for d in ds}
                        for k, ds in comparison.differences.items()},
        "notes": comparison.notes,
    }


def write_comparison(comparison: Comparison, out_dir: Union[str, Path], *, title: str = "Comparison of runs") -> dict[str, Path]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in COMPARISON_FILES.items()}
    paths["markdown"].write_text(comparison_markdown(comparison, title=title))
    paths["json"].write_text(json.dumps(comparison_dict(comparison), indent=2) + "\n")
    if comparison.primary:
        comparison_chart(comparison).save(paths["chart"])
    else:
        paths.pop("chart")
    return paths
