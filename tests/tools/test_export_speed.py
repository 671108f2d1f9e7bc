"""tools/bench/export_speed.py's report: one table per exported model, ratios against eager (no export run here)."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _timing(median: float, rss: float | None, eager_median: float, eager_rss: float) -> dict:
    return {"median_s": median, "peak_rss_mb": rss, "ratio_vs_eager": median / eager_median,
            "peak_rss_ratio_vs_eager": rss / eager_rss if rss else None, "detections": 100}


def test_one_table_per_model_with_ratios(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))  # export_speed imports its siblings as `bench.*`
    sys.modules.pop("bench.export_speed", None)
    from bench.export_speed import EXPORT_MODELS, export_markdown

    assert any("R_50_FPN" in name for name in EXPORT_MODELS) and any("main job" in name for name in EXPORT_MODELS)
    model = {"backends": {"eager": _timing(2.0, 1000.0, 2.0, 1000.0), "onnxruntime": _timing(1.0, 1500.0, 2.0, 1000.0),
                          "torch_export": _timing(3.0, None, 2.0, 1000.0)},
             "export_seconds": {"total": 61.4}, "work": {"test_size": [800, 1333]}}
    section = {"models": {"A": model, "B": {**model, "work": {"test_size": None}}}, "work": {"image": "img.jpg"}}
    lines = export_markdown(section)
    assert lines[0] == "Export of A (img.jpg, resized in the graph to 800 px (max 1333), exported in 61 s for both formats):"
    assert "| onnxruntime | 1.000 | **0.50** | 1500 | 1.50 | 100 |" in lines
    assert "| torch_export | 3.000 | **1.50** | n/a | n/a | 100 |" in lines
    assert sum(line.startswith("| backend |") for line in lines) == 2
    assert any("Export of B" in line and "resized in the graph to none" in line for line in lines)
