"""The benchmark's sections: each returns a JSON-able dict of figures (see tools/benchmark.py)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from bench.export_speed import section_export  # noqa: F401 (benchmark.py finds section_<name> here)
from bench.inputs import COCO_TINY, benchmark_image, training_batch
from bench.models import Recorder, our_mask_rcnn, torchvision_mask_rcnn
from bench.roofline import count_flops, measure_peaks, roofline_entry

SECTIONS = ("inference", "train", "main_job", "data", "eval", "peak")
#: Sections run only when named (``--sections export``): exporting costs about a minute of CPU.
OPT_IN_SECTIONS = ("export",)


def section_inference(args, device, workdir: Path) -> dict[str, Any]:
    import torch

    from framework.utils.cpu_features import has_native_bf16
    from framework.utils.measure import compare_alternating

    image, source = benchmark_image()
    tv = torchvision_mask_rcnn([image.float() / 255], args.test_size).to(device)
    ours = our_mask_rcnn(tv, workdir, device, args.test_size)
    tv_input = [(image.float() / 255).to(device)]
    our_input = [{"image": image.float().to(device), "height": image.shape[1], "width": image.shape[2]}]
    sides = {"ours": lambda: ours(our_input), "torchvision": lambda: tv(tv_input)}
    variants = {name: _inference_variant(ours, name) for name in args.variants}
    rec_tv, rec_ours = Recorder(tv.backbone, tv.rpn), Recorder(ours.backbone, ours.proposal_generator)
    with torch.inference_mode():
        flops, outputs = {}, {}
        for name, call in sides.items():  # the warm-up run, its flops and detections counted
            flops[name], (outputs[name],) = count_flops(call)
        dets_ours, dets_tv = len(outputs["ours"]["instances"]), len(outputs["torchvision"]["boxes"])
        del outputs
        variant_dets = {}
        for name, model in variants.items():  # warm-up (and compilation), outside the timings
            variant_dets[name] = len(model(our_input)[0]["instances"])
            sides[f"ours {name}"] = lambda model=model: model(our_input)
        timings = compare_alternating(sides, repeats=args.repeats, warmup=0)
    work = {
        "image": source,
        "input_size": {"ours": rec_ours.input_size, "torchvision": rec_tv.input_size},
        "memory_format": {"ours": rec_ours.memory_format, "torchvision": rec_tv.memory_format},
        "proposals": {"ours": rec_ours.proposals, "torchvision": rec_tv.proposals},
        "detections": {"ours": dets_ours, "torchvision": dets_tv},
    }
    rec_tv.close()
    rec_ours.close()
    result = _ratio_result("s/img", timings, work)
    result["variants"] = {
        name: {**timings[f"ours {name}"].as_dict(), "detections": variant_dets[name],
               "ratio_vs_torchvision_fp32": timings[f"ours {name}"].median / timings["torchvision"].median}
        for name in variants
    }
    if "bf16" in variants:
        result["cpu_bf16_native"] = has_native_bf16(device.type)
    layouts = {"ours": rec_ours.memory_format, "torchvision": rec_tv.memory_format}
    result["roofline"] = {name: roofline_entry(flops[name], timings[name].median, dtype="fp32", layout=layouts[name])
                          for name in flops}
    for name in variants:  # the same network: the same counted work
        result["roofline"][f"ours {name}"] = roofline_entry(
            flops["ours"], timings[f"ours {name}"].median, dtype="bf16" if name == "bf16" else "fp32", layout=layouts["ours"])
    return result


def _inference_variant(ours, name: str):
    """A copy of ``ours`` in one of ``--variants``: "bf16" (inference_amp) or "compile" (the
    backbone and the mask head through torch.compile, as ``model.torch_compile`` does)."""
    import copy

    model = copy.deepcopy(ours)
    if name == "bf16":
        model.inference_amp = "bf16"
    elif name == "compile":
        model.backbone.compile()
        model.roi_heads.mask_head.compile()
    return model


def section_train(args, device, workdir: Path) -> dict[str, Any]:
    import torch

    from framework.layers.amp import amp_autocast
    from framework.structures import BitMasks, Boxes, Instances
    from framework.utils.cpu_features import has_native_bf16
    from framework.utils.measure import compare_alternating

    batch = training_batch()
    tv = torchvision_mask_rcnn([img.float() / 255 for img, *_ in batch]).to(device)
    ours = our_mask_rcnn(tv, workdir, device)
    h, w = batch[0][0].shape[-2:]
    tv.transform.min_size, tv.transform.max_size = (int(h),), int(max(h, w))  # no resize: both see 512x768
    tv_images = [(img.float() / 255).to(device) for img, *_ in batch]
    tv_targets = [{"boxes": b.to(device), "labels": (c + 1).to(device), "masks": m.to(torch.uint8).to(device)}
                  for _, b, c, m in batch]
    our_inputs = [
        {"image": img.float().to(device),
         "instances": Instances((int(h), int(w)), gt_boxes=Boxes(b), gt_classes=c, gt_masks=BitMasks(m))}
        for img, b, c, m in batch
    ]
    optimizers = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        for name, m in (("ours", ours), ("torchvision", tv))
    }

    def step(name: str, model, call: Callable[[], dict], amp: str = "none") -> None:
        with amp_autocast(amp, device.type, knob="--variants"):
            losses = call()
        optimizers[name].zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizers[name].step()

    ours.train(), tv.train()
    rec_tv, rec_ours = Recorder(tv.backbone, tv.rpn), Recorder(ours.backbone, ours.proposal_generator)
    sides = {"ours": lambda: step("ours", ours, lambda: ours(our_inputs)),
             "torchvision": lambda: step("torchvision", tv, lambda: tv(tv_images, tv_targets))}
    if "bf16" in args.variants:  # what train.amp=bf16 runs: the step's forward under autocast
        sides["ours bf16"] = lambda: step("ours", ours, lambda: ours(our_inputs), amp="bf16")
    flops = {name: count_flops(call)[0] for name, call in sides.items()}  # one untimed step each
    timings = compare_alternating(sides, repeats=args.repeats, warmup=1)
    work = {
        "images": f"{len(batch)} x {int(h)}x{int(w)}, {len(batch[0][1])} boxes + masks each",
        "input_size": {"ours": rec_ours.input_size, "torchvision": rec_tv.input_size},
        "memory_format": {"ours": rec_ours.memory_format, "torchvision": rec_tv.memory_format},
        "proposals": {"ours": rec_ours.proposals, "torchvision": rec_tv.proposals},
        "sampling": {"rpn": "256 anchors/img, 50% positive", "roi": "512 RoIs/img, 25% positive"},
    }
    layouts = {"ours": rec_ours.memory_format, "torchvision": rec_tv.memory_format}
    rec_tv.close()
    rec_ours.close()
    result = _ratio_result("s/iter", timings, work)
    result["roofline"] = {
        name: roofline_entry(flops[name], timings[name].median, dtype="bf16" if name.endswith("bf16") else "fp32",
                             layout=layouts[name.split()[0]])
        for name in sides
    }
    if "ours bf16" in sides:
        result["variants"] = {"bf16": {**timings["ours bf16"].as_dict(), "detections": "n/a",
                                       "ratio_vs_torchvision_fp32": timings["ours bf16"].median / timings["torchvision"].median}}
        result["cpu_bf16_native"] = has_native_bf16(device.type)
    return result


class StageTimer:
    """Wall time of named submodules' forwards (pre/post hooks), summed per step."""

    def __init__(self, modules: dict[str, Any]) -> None:
        from framework.utils.measure import sync

        self._sync = sync
        self.seconds = {name: 0.0 for name in modules}
        self._start: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda m, a, name=name: self._begin(name))
            module.register_forward_hook(lambda m, a, o, name=name: self._end(name))

    def _begin(self, name: str) -> None:
        self._sync()
        self._start[name] = time.perf_counter()

    def _end(self, name: str) -> None:
        self._sync()
        self.seconds[name] += time.perf_counter() - self._start.pop(name)


def section_main_job(args, device, workdir: Path) -> dict[str, Any]:
    """The default job's training step: s/iter and the share of each stage, in float32 and (with
    ``--variants bf16``) as ``train.amp=bf16`` runs it, the two alternating step by step on the
    same batches; each batch's counted work (forward + backward) from an untimed pass afterwards."""
    import statistics

    from framework.config.compose import compose
    from framework.data.build import build_train_loader
    from framework.engine.builders import build_datasets, build_mapper, build_model, to_kwargs
    from framework.engine.optim import build_optimizer
    from framework.layers.amp import amp_autocast
    from framework.layers.memory_format import is_channels_last
    from framework.utils.events import EventStorage
    from framework.utils.measure import sync

    cfg = compose([])
    data = build_datasets(cfg)
    model = build_model(cfg, device).train()
    optimizer = build_optimizer(model, cfg.solver)
    loader = iter(build_train_loader(data.train, build_mapper(cfg, "train"), **to_kwargs(cfg.dataloader.train)))
    stages = StageTimer({"backbone": model.backbone, "rpn": model.proposal_generator, "roi_heads": model.roi_heads})
    layout: dict[str, str] = {}

    def record_layout(module, args) -> None:  # a pre-hook's return value would replace the input
        layout.setdefault("x", "channels_last" if is_channels_last(args[0]) else "NCHW")

    model.backbone.register_forward_pre_hook(record_layout)
    modes = ["none", "bf16"] if "bf16" in args.variants else ["none"]
    steps = max(args.repeats * 3, 6)
    per_step: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    batches = []
    with EventStorage():
        for i in range(steps + 2):  # 2 warm-up steps
            t0 = time.perf_counter()
            batch = next(loader)
            data_s = time.perf_counter() - t0
            if i >= 2:
                batches.append(batch)
            for mode in modes:
                for k in stages.seconds:
                    stages.seconds[k] = 0.0
                t1 = time.perf_counter()
                with amp_autocast(mode, device.type, knob="--variants"):
                    losses = model(batch)
                loss = sum(losses.values())
                sync()
                t2 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                sync()
                t3 = time.perf_counter()
                optimizer.step()
                sync()
                t4 = time.perf_counter()
                if i >= 2:
                    per_step[mode].append({"data": data_s, **stages.seconds,
                                           "other_forward": (t2 - t1) - sum(stages.seconds.values()),
                                           "backward": t3 - t2, "optimizer": t4 - t3, "total": data_s + t4 - t1})

        def counted(batch) -> None:
            loss = sum(model(batch).values())
            loss.backward()
            optimizer.zero_grad(set_to_none=True)

        step_flops = [count_flops(lambda b=b: counted(b))[0] for b in batches]
    batch_size = int(cfg.dataloader.train.total_batch_size)
    result: dict[str, Any] = {"unit": "s/iter", "roofline": {}, "work": {
        "model": cfg.model.backbone.bottom_up.name + "-" + str(cfg.model.backbone.bottom_up.depth) + " FPN (the default job)",
        "batch": batch_size, "input_min_size": list(cfg.input.train.augmentations[0].short_edge_length),
        "steps": steps, "memory_format": layout.get("x")}}
    for mode in modes:
        rows = per_step[mode]
        median = {k: statistics.median(s[k] for s in rows) for k in rows[0]}
        # Shares from means: the stages of a step add up to its total, so their means add up to the mean total.
        mean = {k: statistics.fmean(s[k] for s in rows) for k in rows[0]}
        compute = [s["total"] - s["data"] for s in rows]
        figures = {"s_per_iter": median["total"], "shares": {k: v / mean["total"] for k, v in mean.items() if k != "total"},
                   "stage_seconds": median, "images_per_s_consumed": batch_size / statistics.median(compute)}
        # the mean rate over the steps (sum of work / sum of compute time): image sizes vary by step
        result["roofline"]["fp32" if mode == "none" else mode] = roofline_entry(
            statistics.fmean(step_flops), statistics.fmean(compute), dtype="fp32" if mode == "none" else mode,
            layout=layout.get("x"))
        if mode == "none":
            result.update(figures)
        else:
            result.setdefault("variants", {})[mode] = {**figures, "ratio_vs_fp32": figures["s_per_iter"] / result["s_per_iter"]}
    return result


def section_data(args, device, workdir: Path, consumed: Optional[float]) -> dict[str, Any]:
    import itertools

    from framework.config.compose import compose
    from framework.data import load_coco_json
    from framework.data.build import build_train_loader
    from framework.engine.builders import build_datasets, build_mapper, to_kwargs

    cfg = compose([])
    sets = {"synthetic_train": build_datasets(cfg).train}
    if (COCO_TINY / "annotations" / "instances_train2017.json").is_file():
        sets["coco_tiny_train"] = load_coco_json(COCO_TINY / "annotations" / "instances_train2017.json",
                                                 COCO_TINY / "train2017", dataset_name="coco_tiny_train")[0]
    loader_cfg = to_kwargs(cfg.dataloader.train)
    workers = sorted({0, max(int(loader_cfg["num_workers"]), 2)})
    batches = 6 if args.quick else 20
    out: dict[str, Any] = {"unit": "img/s", "main_job_consumes_img_per_s": consumed, "results": {}}
    for name, dicts in sets.items():
        for n in workers:
            loader = build_train_loader(dicts, build_mapper(cfg, "train"), **{**loader_cfg, "num_workers": n})
            it = iter(loader)
            next(it)  # worker start-up and first batch are not throughput
            start = time.perf_counter()
            images = sum(len(b) for b in itertools.islice(it, batches))
            rate = images / (time.perf_counter() - start)
            out["results"][f"{name}, {n} workers"] = {
                "img_per_s": rate, "x_main_job": rate / consumed if consumed else None,
            }
            del it, loader
    return out


def section_eval(args, device, workdir: Path) -> dict[str, Any]:
    import importlib.util

    import numpy as np

    from framework.evaluation.coco_metrics import evaluate_coco_results, load_coco_gt

    if (COCO_TINY / "annotations" / "instances_val2017.json").is_file():
        gt_json = COCO_TINY / "annotations" / "instances_val2017.json"
    else:
        from framework.data.builtin import ensure_builtin_synthetic

        gt_json = ensure_builtin_synthetic()["val"][0]
    coco = load_coco_gt(gt_json)
    rng = np.random.default_rng(0)
    results = []
    for ann in coco.dataset["annotations"]:  # gt with jittered boxes and scores: a fixed, non-trivial set
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 0.05, 4) * [w, h, w, h]
        rle = coco.annToRLE(ann)
        rle["counts"] = rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": float(rng.random()),
                        "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)],
                        "segmentation": rle})
    out: dict[str, Any] = {"unit": "s", "gt": str(gt_json), "predictions": len(results), "results": {}}
    # The evaluator's own path with each backend (evaluators.coco.backend): the ground truth loaded
    # and both tasks evaluated, the same inputs for both.
    for backend, label in (("pycocotools", "pycocotools"), ("faster_coco_eval", "faster-coco-eval")):
        if backend == "faster_coco_eval" and importlib.util.find_spec("faster_coco_eval") is None:
            continue
        start = time.perf_counter()
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            for task in ("bbox", "segm"):
                evaluate_coco_results(load_coco_gt(gt_json, backend=backend), results, task)
        out["results"][label] = time.perf_counter() - start
    if "faster-coco-eval" not in out["results"]:
        out["results"]["faster-coco-eval"] = "not installed (pip install 'framework[fast-eval]')"
    return out


def section_peak(args, device, workdir: Path) -> dict[str, Any]:
    return measure_peaks(device, args.repeats)


def _ratio_result(unit: str, timings, work: dict[str, Any]) -> dict[str, Any]:
    ours, tv = timings["ours"], timings["torchvision"]
    equal = (work["input_size"]["ours"] == work["input_size"]["torchvision"]
             and work["proposals"]["ours"] == work["proposals"]["torchvision"]
             and work.get("detections", {}).get("ours") == work.get("detections", {}).get("torchvision"))
    rss = (ours.peak_rss_mb / tv.peak_rss_mb) if ours.peak_rss_mb and tv.peak_rss_mb else None
    cuda = (ours.peak_cuda_mb / tv.peak_cuda_mb) if ours.peak_cuda_mb and tv.peak_cuda_mb else None
    return {"unit": unit, "ours": ours.as_dict(), "torchvision": tv.as_dict(), "ratio": ours.median / tv.median,
            "peak_rss_ratio": rss, "peak_cuda_ratio": cuda, "equal_work": equal, "work": work}
