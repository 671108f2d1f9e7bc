"""The files of an error breakdown (:func:`framework.evaluation.error_analysis.analyze_errors`):
``errors.json`` (the numbers), ``errors.md`` (a markdown table) and ``errors.png`` (a bar chart)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from framework.evaluation.error_matching import ERROR_TYPES

__all__ = ["ERRORS_JSON", "ERRORS_MARKDOWN", "ERRORS_CHART", "errors_markdown", "errors_chart", "write_error_report"]

ERRORS_JSON, ERRORS_MARKDOWN, ERRORS_CHART = "errors.json", "errors.md", "errors.png"

SPECIAL = ("FP", "FN")
#: Bar colours per error type (one hue each, the special ones in greys).
COLORS = {
    "cls": (231, 111, 81), "loc": (244, 162, 97), "both": (199, 125, 186), "dupe": (42, 157, 143),
    "bkg": (38, 70, 83), "miss": (233, 196, 106), "FP": (120, 120, 120), "FN": (180, 180, 180),
}

_EXPLANATION = (
    "AP50: TIDE's AP at IoU 0.5 (101 recall points, percent). dAP of an error type: the AP50 gained by fixing every "
    "error of that type (TIDE's oracle; foreground IoU 0.5, background IoU 0.1): cls = right box, wrong class; "
    "loc = right class, IoU in [0.1, 0.5]; both = wrong class and poorly localized; dupe = a second detection of an "
    "object already found; bkg = IoU <= 0.1 with every object; miss = an object no detection is about. "
    "FP / FN: the AP50 gained by fixing all false positives / all false negatives."
)


def _json_safe(value: Any) -> Any:
    """NaN -> None (json has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def errors_markdown(breakdown: Mapping[str, Mapping[str, Any]], *, sources: Optional[str] = None) -> str:
    """The breakdown as markdown: the dAP table (one row per task), the error counts, what they mean.

    Args:
        breakdown: ``analyze_errors``' result.
        sources: a line naming the inputs (ground truth, results), or ``None``.
    """
    head = ["task", "AP50", *ERROR_TYPES, *SPECIAL]
    lines = ["# Error breakdown (TIDE)", ""]
    if sources:
        lines += [sources, ""]
    lines += ["| " + " | ".join(head) + " |", "|:--|" + "--:|" * (len(head) - 1)]
    for task, b in breakdown.items():
        cells = [task, _number(b["AP50"]), *(_number(b["dAP"][t]) for t in ERROR_TYPES),
                 *(_number(b["dAP_special"][t]) for t in SPECIAL)]
        lines.append("| " + " | ".join(cells) + " |")
    if all("counts" in b for b in breakdown.values()):
        lines += ["", "Number of errors (detections; miss: objects):", "",
                  "| task | " + " | ".join(ERROR_TYPES) + " |", "|:--|" + "--:|" * len(ERROR_TYPES)]
        for task, b in breakdown.items():
            lines.append(f"| {task} | " + " | ".join(str(b["counts"][t]) for t in ERROR_TYPES) + " |")
    lines += ["", _EXPLANATION, ""]
    return "\n".join(lines)


def errors_chart(breakdown: Mapping[str, Mapping[str, Any]]) -> Any:
    """A PIL image: per task, a bar per error type's dAP, then the FP / FN bars (one shared scale)."""
    from framework.utils.charts import horizontal_bars

    panels = [
        (f"{task}: AP50 {_number(b['AP50'])}",
         [[(t, b["dAP"][t]) for t in ERROR_TYPES], [(t, b["dAP_special"][t]) for t in SPECIAL]])
        for task, b in breakdown.items()
    ]
    return horizontal_bars(panels, colors=COLORS, title="AP50 lost to each error type (TIDE dAP)", axis_label="dAP")


def write_error_report(breakdown: Mapping[str, Mapping[str, Any]], out_dir: Union[str, Path], *,
                       sources: Optional[str] = None) -> dict[str, Path]:
    """Write ``errors.json``, ``errors.md`` and ``errors.png`` into ``out_dir`` (created if needed).

    ``errors.json`` is ``{task: {"AP50", "dAP": {...}, "dAP_special": {"FP", "FN"}, "counts": {...}}}``
    with AP points (0-100), ``null`` where undefined. Returns ``{"json", "markdown", "chart"}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / ERRORS_JSON, "markdown": out / ERRORS_MARKDOWN, "chart": out / ERRORS_CHART}
    paths["json"].write_text(json.dumps(_json_safe(breakdown), indent=2) + "\n")
    paths["markdown"].write_text(errors_markdown(breakdown, sources=sources))
    errors_chart(breakdown).save(paths["chart"])
    return paths
