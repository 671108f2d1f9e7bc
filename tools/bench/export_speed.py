"""The ``export`` section: each model of :data:`EXPORT_MODELS` run by eager Predictor, onnxruntime
and the torch.export program, alternating in one process (docs/deployment.md quotes it).

Opt-in (``--sections export``): exporting costs about a minute of CPU per model, mostly the ONNX
translation.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench.inputs import benchmark_image

__all__ = ["EXPORT_MODELS", "ExportBenchModel", "export_markdown", "section_export"]

#: The backends compared, eager first (the ratios are against it).
BACKENDS = ("eager", "onnxruntime", "torch_export")

class ExportBenchModel(NamedTuple):
    """One model of the section: config overrides of configs/train.yaml; whether it resizes to
    ``--test-size`` (R50-FPN at its usual 800 px, as the ``inference`` section; the main job keeps its
    own test size); whether its box outputs are neutralised (see :func:`_flatten_scores`)."""

    overrides: list[str]
    at_test_size: bool = False
    flat_scores: bool = False


#: The models measured, by name (issue 27 asks for R50-FPN and the main job's model).
EXPORT_MODELS: dict[str, ExportBenchModel] = {
    "main job (mask_rcnn_R_18_FPN_quick)": ExportBenchModel([]),
    "mask_rcnn_R_50_FPN": ExportBenchModel(["model=mask_rcnn_R_50_FPN", "model.roi_heads.box_predictor.test_score_thresh=0.0"],
                                           at_test_size=True, flat_scores=True),
}


def _flatten_scores(model) -> None:
    """Zero the RPN's anchor deltas and the box predictor's class scores and box deltas: proposals
    are then anchors, detections their proposals, every class scoring 1/(K+1).

    A randomly initialised R50 amplifies its input so much that these layers' outputs are in the
    hundreds: softmax gives exactly 0 to every class and the decoded boxes degenerate, so almost no
    detection is left even at score threshold 0, and the mask head and the pasting would hardly
    run. Zeroed (with threshold 0), 100 detections go through them, the work of a trained model on
    a busy image.
    """
    import torch

    heads = model.roi_heads.box_predictor
    layers = [heads.cls_score, heads.bbox_pred, model.proposal_generator.rpn_head.anchor_deltas]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()


def _measure(name: str, overrides: list[str], args, run: Path, array, *, flat_scores: bool) -> dict[str, Any]:
    """Export one model (seed-0 initialisation) by the code of tools/export_model.py into ``run``,
    then time the three backends on ``array`` ((H, W, 3) RGB uint8), alternating."""
    import torch
    from omegaconf import OmegaConf

    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_model
    from framework.engine.predictor import Predictor, resolve_metadata
    from framework.export.exporter import export_model
    from framework.utils.measure import compare_alternating

    cfg = compose(overrides)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu"))
    if flat_scores:
        _flatten_scores(model)
    Checkpointer(model, str(run)).save("model_final")
    del model
    started = time.perf_counter()
    written = export_model(cfg, run / "model_final.pth", formats=["onnx", "torch_export"], output_dir=run / "export",
                           dataset=resolve_metadata(cfg))
    export_seconds = time.perf_counter() - started
    predictors = {"eager": Predictor.from_run(run, device="cpu"),
                  **{b: Predictor.from_run(run, backend=b) for b in BACKENDS[1:]}}
    detections = {backend: len(p(array)) for backend, p in predictors.items()}  # also the warm-up
    with torch.inference_mode():
        timings = compare_alternating({backend: (lambda p=p: p(array)) for backend, p in predictors.items()},
                                      repeats=args.repeats, warmup=0)
    eager = timings["eager"]
    augmentations = cfg.input.test.augmentations
    test_size = [augmentations[0].short_edge_length[0], augmentations[0].max_size] if augmentations else None
    return {
        "backends": {backend: {**t.as_dict(), "ratio_vs_eager": t.median / eager.median,
                               "peak_rss_ratio_vs_eager": (t.peak_rss_mb / eager.peak_rss_mb
                                                           if t.peak_rss_mb and eager.peak_rss_mb else None),
                               "detections": detections[backend]}
                     for backend, t in timings.items()},
        "export_seconds": {"total": export_seconds, **{fmt: info["seconds"] for fmt, info in written.items()}},
        "work": {"model": name, "overrides": overrides, "test_size": test_size},
    }


def section_export(args, device, workdir: Path) -> dict[str, Any]:
    """s/img and peak RSS of the three backends on one image, per model of :data:`EXPORT_MODELS`,
    and the export's seconds per format.

    Peak RSS is the process's peak during a backend's runs (reset before each run); the three
    models of one entry are loaded together (the previous entry's are released first), so the common
    baseline narrows the ratios.

    Each model is at its seed-0 initialisation (R50's box outputs neutralised, see
    :func:`_flatten_scores`), in a run directory exported by the code of tools/export_model.py;
    the detection counts are reported per backend. Exports run on the CPU, so every backend does; ``device`` is not used.
    """
    import torch

    del device
    image, source = benchmark_image()
    array = image.permute(1, 2, 0).contiguous().numpy()  # (H, W, 3) RGB uint8: what every backend takes
    models = {}
    for i, (name, spec) in enumerate(EXPORT_MODELS.items()):
        overrides = list(spec.overrides)
        if spec.at_test_size:
            short, longest = args.test_size
            overrides += [f"input.test.augmentations.0.short_edge_length=[{short}]",
                          f"input.test.augmentations.0.max_size={longest}"]
        models[name] = _measure(name, overrides, args, workdir / f"export_run{i}", array, flat_scores=spec.flat_scores)
        gc.collect()  # the previous model's three predictors are gone before the next are loaded
    return {"unit": "s/img", "models": models,
            "work": {"image": source, "input_size": list(array.shape[:2]), "threads": torch.get_num_threads()}}


def export_markdown(section: dict[str, Any]) -> list[str]:
    """One table per model: one row per backend, ratios against eager."""
    lines = []
    for name, model in section["models"].items():
        size = model["work"]["test_size"]
        lines += [f"Export of {name} ({section['work']['image']}, resized in the graph to "
                  f"{f'{size[0]} px (max {size[1]})' if size else 'none'}, exported in "
                  f"{model['export_seconds']['total']:.0f} s for both formats):", "",
                  "| backend | s/img | x eager | peak RSS MiB | x eager | detections |", "|---|---|---|---|---|---|"]
        for backend, b in model["backends"].items():
            rss = f"{b['peak_rss_mb']:.0f}" if b["peak_rss_mb"] else "n/a"
            rss_ratio = f"{b['peak_rss_ratio_vs_eager']:.2f}" if b["peak_rss_ratio_vs_eager"] else "n/a"
            lines.append(f"| {backend} | {b['median_s']:.3f} | **{b['ratio_vs_eager']:.2f}** | {rss} | {rss_ratio} | "
                         f"{b['detections']} |")
        lines.append("")
    return lines
