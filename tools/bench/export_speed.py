"""The ``export`` section: the main job's model run by eager Predictor, onnxruntime and the
torch.export program, alternating in one process (docs/deployment.md quotes it).

Opt-in (``--sections export``): exporting costs about a minute of CPU, mostly the ONNX translation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.inputs import benchmark_image

__all__ = ["export_markdown", "section_export"]

#: The backends compared, eager first (the ratios are against it).
BACKENDS = ("eager", "onnxruntime", "torch_export")


def section_export(args, device, workdir: Path) -> dict[str, Any]:
    """s/img and peak RSS of the three backends on one image, the export's seconds per format.

    Peak RSS is the process's peak during a backend's runs (reset before each run); all three
    models are loaded in the process, so the common baseline narrows the ratios.

    The model is the main job's (configs/train.yaml) at its seed-0 initialisation, in a run
    directory exported by the code of tools/export_model.py; weights do not change the work
    (the score threshold is the config's, and the detection counts are reported per backend).
    Exports run on the CPU, so every backend does; ``device`` is not used.
    """
    import torch
    from omegaconf import OmegaConf

    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_model
    from framework.engine.predictor import Predictor, resolve_metadata
    from framework.export.exporter import export_model
    from framework.utils.measure import compare_alternating

    del device
    cfg = compose([])
    run = workdir / "export_run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    Checkpointer(build_model(cfg, torch.device("cpu")), str(run)).save("model_final")
    started = time.perf_counter()
    written = export_model(cfg, run / "model_final.pth", formats=["onnx", "torch_export"], output_dir=run / "export",
                           dataset=resolve_metadata(cfg))
    export_seconds = time.perf_counter() - started
    predictors = {"eager": Predictor.from_run(run, device="cpu"),
                  **{b: Predictor.from_run(run, backend=b) for b in BACKENDS[1:]}}
    image, source = benchmark_image()
    array = image.permute(1, 2, 0).contiguous().numpy()  # (H, W, 3) RGB uint8: what every backend takes
    detections = {name: len(p(array)) for name, p in predictors.items()}  # also the warm-up
    with torch.inference_mode():
        timings = compare_alternating({name: (lambda p=p: p(array)) for name, p in predictors.items()},
                                      repeats=args.repeats, warmup=0)
    eager = timings["eager"]
    return {
        "unit": "s/img",
        "backends": {name: {**t.as_dict(), "ratio_vs_eager": t.median / eager.median,
                            "peak_rss_ratio_vs_eager": (t.peak_rss_mb / eager.peak_rss_mb
                                                        if t.peak_rss_mb and eager.peak_rss_mb else None),
                            "detections": detections[name]}
                     for name, t in timings.items()},
        "export_seconds": {"total": export_seconds, **{fmt: info["seconds"] for fmt, info in written.items()}},
        "work": {"model": "the main job's (configs/train.yaml), seed-0 initialisation", "image": source,
                 "input_size": list(array.shape[:2]), "threads": torch.get_num_threads()},
    }


def export_markdown(section: dict[str, Any]) -> list[str]:
    """The section's table: one row per backend, ratios against eager."""
    lines = [f"Export ({section['work']['model']}, {section['work']['image']}, exported in "
             f"{section['export_seconds']['total']:.0f} s for both formats):", "",
             "| backend | s/img | x eager | peak RSS MiB | x eager | detections |", "|---|---|---|---|---|---|"]
    for name, b in section["backends"].items():
        rss = f"{b['peak_rss_mb']:.0f}" if b["peak_rss_mb"] else "n/a"
        rss_ratio = f"{b['peak_rss_ratio_vs_eager']:.2f}" if b["peak_rss_ratio_vs_eager"] else "n/a"
        lines.append(f"| {name} | {b['median_s']:.3f} | **{b['ratio_vs_eager']:.2f}** | {rss} | {rss_ratio} | "
                     f"{b['detections']} |")
    return lines + [""]
