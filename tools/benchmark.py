#!/usr/bin/env python
"""Speed of this framework against torchvision, measured in the same process, same threads.

    python tools/benchmark.py --quick                       # < 5 minutes on 2 CPU cores
    python tools/benchmark.py --json bench.json --markdown bench.md
    python tools/benchmark.py --sections inference train --repeats 7 --device cuda
    python tools/benchmark.py --sections inference --variants bf16 compile

Sections (``--sections``, default all):

* ``inference``: Mask R-CNN R50-FPN, batch 1, a COCO image (../shared/data/coco_tiny when present,
  else a generated 480x640 one) resized to 800 px by both models, eval mode. torchvision's
  ``maskrcnn_resnet50_fpn`` layout is built with a fixed seed (BatchNorm statistics calibrated on
  the image, then frozen) and its weights are loaded into ``experiment=torchvision_R_50_FPN_coco``,
  so both run the same network; the score threshold is 0 so both send 100 detections through the
  mask head. s/img, peak RSS (CUDA memory on a GPU). ``--variants bf16 compile`` adds ours with
  ``model.inference_amp=bf16`` and with the backbone and mask head through ``torch.compile``,
  each against torchvision in fp32 (eager), in the same alternation.
* ``train``: one iteration (forward, backward, SGD step) of the same two models on 2 images of
  512x768 with 8 boxes and masks each, the same sampling settings on both sides; s/iter, peak RSS.
* ``main_job``: the default job's model and data (configs/train.yaml): s/iter of a training step
  and the share of each stage (data wait, backbone, RPN, RoI heads, backward, optimizer).
* ``data``: mapper + loader throughput of the default job's train pipeline in img/s, with 0 and N
  workers, on synthetic_train and on coco_tiny train (when present), against what the main job's
  step consumes.
* ``eval``: seconds for pycocotools (and faster-coco-eval, when installed) to evaluate a fixed set
  of box + mask predictions on a COCO-format val set.
* ``peak``: fp32 matmul and 3x3 convolution GFLOP/s measured on the spot, beside the achieved
  GFLOP/s of both models' inference (``inference`` counts them with torch.utils.flop_counter:
  2 flops per multiply-add; RoIAlign and NMS are not counted).

Each model figure is ours / torchvision's: runs alternate (A, B, A, B, ...) after a warm-up, and
the medians are compared. Equal work is verified and printed (input size, proposals, detections).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
COCO_TINY = REPO.parent / "shared" / "data" / "coco_tiny"
SECTIONS = ("inference", "train", "main_job", "data", "eval", "peak")
logger = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------------- models
def _freeze_batchnorm(module):
    """Replace every BatchNorm2d by torchvision's FrozenBatchNorm2d with the same statistics."""
    import torch
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


def torchvision_mask_rcnn(calibration_images: list) -> Any:
    """torchvision's ``maskrcnn_resnet50_fpn`` as its COCO weights build it (FrozenBN, conv1 + layer1
    frozen), randomly initialised with seed 0, BatchNorm statistics of ``calibration_images``, and
    classification / objectness layers re-drawn wider so that rankings are not near-ties."""
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(weights=None), trainable_layers=3)
    model = MaskRCNN(backbone, num_classes=91, box_score_thresh=0.0, box_detections_per_img=100)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative statistics of the calibration images
    model.train()
    with torch.no_grad():
        model.backbone(model.transform(calibration_images)[0].tensors)
    _freeze_batchnorm(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (model.roi_heads.box_predictor.cls_score, model.rpn.head.cls_logits):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.05)
    return model.eval()


def our_mask_rcnn(torchvision_model, folder: Path, device) -> Any:
    """``experiment=torchvision_R_50_FPN_coco`` holding ``torchvision_model``'s weights (via a
    ``.pth`` file and the loader behind ``weights=``)."""
    import torch

    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.registry import META_ARCHITECTURES

    cfg = compose([
        "experiment=torchvision_R_50_FPN_coco",
        "dataset.num_classes=90",
        "model.backbone.bottom_up.norm_eps=1e-5",  # torchvision's BatchNorm eps when built without COCO weights
        "model.roi_heads.test_score_thresh=0.0",
    ])
    path = folder / "maskrcnn_resnet50_fpn_seed0.pth"
    torch.save(torchvision_model.state_dict(), path)
    model = META_ARCHITECTURES.build(cfg.model, path="model")
    with contextlib.redirect_stdout(sys.stderr):
        Checkpointer(model).load(str(path), strict=True)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------- inputs
def benchmark_image() -> tuple[Any, str]:
    """A COCO image (RGB uint8 (3, H, W)) and where it came from."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted((COCO_TINY / "val2017").glob("*.jpg"))
    if files:
        from framework.data.detection_utils import read_image

        return read_image(files[0], "RGB"), str(files[0].relative_to(REPO.parent))
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC))
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), "generated 480x640"


def training_batch(num_images: int = 2, size: tuple[int, int] = (512, 768), boxes_per_image: int = 8):
    """Generated images with ``boxes_per_image`` boxes and rectangle masks each: (images uint8,
    boxes (B, 4) float, classes (B,) in 0..89, masks (B, H, W) bool) per image."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = size
    out = []
    for _ in range(num_images):
        image = (torch.rand(3, h // 16, w // 16, generator=g) * 255)
        image = torch.nn.functional.interpolate(image[None], size=(h, w), mode="bilinear")[0].to(torch.uint8)
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 32 + torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        boxes = torch.cat([xy, xy + wh], dim=1).round()
        classes = torch.randint(0, 90, (boxes_per_image,), generator=g)
        masks = torch.zeros(boxes_per_image, h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            m[y0:y1, x0:x1] = True
        out.append((image, boxes, classes, masks))
    return out


class Recorder:
    """Forward hooks recording the input size of a backbone and the count of proposals."""

    def __init__(self, backbone, rpn) -> None:
        self.input_size: Optional[tuple[int, int]] = None
        self.proposals: list[int] = []
        self._handles = [
            backbone.register_forward_pre_hook(self._backbone),
            rpn.register_forward_hook(self._rpn),
        ]

    def _backbone(self, module, args) -> None:
        self.input_size = tuple(args[0].shape[-2:])

    def _rpn(self, module, args, output) -> None:
        self.proposals = [len(p) for p in output[0]]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


# ----------------------------------------------------------------------------------- sections
def section_inference(args, device, workdir: Path) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from framework.utils.measure import compare_alternating

    image, source = benchmark_image()
    tv = torchvision_mask_rcnn([image.float() / 255]).to(device)
    ours = our_mask_rcnn(tv, workdir, device)
    tv_input = [(image.float() / 255).to(device)]
    our_input = [{"image": image.float().to(device), "height": image.shape[1], "width": image.shape[2]}]
    sides = {"ours": lambda: ours(our_input), "torchvision": lambda: tv(tv_input)}
    variants = {name: _inference_variant(ours, name) for name in args.variants}
    rec_tv, rec_ours = Recorder(tv.backbone, tv.rpn), Recorder(ours.backbone, ours.proposal_generator)
    with torch.inference_mode():
        dets_tv = len(tv(tv_input)[0]["boxes"])
        dets_ours = len(ours(our_input)[0]["instances"])
        flops = {}
        for name, call in sides.items():  # the warm-up run, counted
            with FlopCounterMode(display=False) as counter:
                call()
            flops[name] = counter.get_total_flops()
        variant_dets = {}
        for name, model in variants.items():  # warm-up (and compilation), outside the timings
            variant_dets[name] = len(model(our_input)[0]["instances"])
            sides[f"ours {name}"] = lambda model=model: model(our_input)
        timings = compare_alternating(sides, repeats=args.repeats, warmup=0)
    work = {
        "image": source,
        "input_size": {"ours": rec_ours.input_size, "torchvision": rec_tv.input_size},
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
        result["cpu_bf16_native"] = device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    result["gflops"] = {name: f / 1e9 for name, f in flops.items()}  # 2 per multiply-add; RoIAlign/NMS not counted
    result["achieved_gflop_per_s"] = {name: flops[name] / timings[name].median / 1e9 for name in flops}
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

    from framework.structures import BitMasks, Boxes, Instances
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

    def step(name: str, model, call: Callable[[], dict]) -> None:
        losses = call()
        optimizers[name].zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizers[name].step()

    ours.train(), tv.train()
    rec_tv, rec_ours = Recorder(tv.backbone, tv.rpn), Recorder(ours.backbone, ours.proposal_generator)
    timings = compare_alternating(
        {"ours": lambda: step("ours", ours, lambda: ours(our_inputs)),
         "torchvision": lambda: step("torchvision", tv, lambda: tv(tv_images, tv_targets))},
        repeats=args.repeats, warmup=1,
    )
    work = {
        "images": f"{len(batch)} x {int(h)}x{int(w)}, {len(batch[0][1])} boxes + masks each",
        "input_size": {"ours": rec_ours.input_size, "torchvision": rec_tv.input_size},
        "proposals": {"ours": rec_ours.proposals, "torchvision": rec_tv.proposals},
        "sampling": {"rpn": "256 anchors/img, 50% positive", "roi": "512 RoIs/img, 25% positive"},
    }
    rec_tv.close()
    rec_ours.close()
    return _ratio_result("s/iter", timings, work)


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
    import statistics

    from framework.config.compose import compose
    from framework.data.build import build_train_loader
    from framework.engine.builders import build_datasets, build_mapper, build_model, to_kwargs
    from framework.engine.optim import build_optimizer
    from framework.utils.events import EventStorage
    from framework.utils.measure import sync

    cfg = compose([])
    data = build_datasets(cfg)
    model = build_model(cfg, device).train()
    optimizer = build_optimizer(model, cfg.solver)
    loader = iter(build_train_loader(data.train, build_mapper(cfg, "train"), **to_kwargs(cfg.dataloader.train)))
    stages = StageTimer({"backbone": model.backbone, "rpn": model.proposal_generator, "roi_heads": model.roi_heads})
    steps = max(args.repeats * 3, 6)
    per_step: list[dict[str, float]] = []
    with EventStorage():
        for i in range(steps + 2):  # 2 warm-up steps
            for k in stages.seconds:
                stages.seconds[k] = 0.0
            t0 = time.perf_counter()
            batch = next(loader)
            t1 = time.perf_counter()
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
                per_step.append({"data": t1 - t0, **stages.seconds, "other_forward": (t2 - t1) - sum(stages.seconds.values()),
                                 "backward": t3 - t2, "optimizer": t4 - t3, "total": t4 - t0})
    median = {k: statistics.median(s[k] for s in per_step) for k in per_step[0]}
    # Shares from means: the stages of a step add up to its total, so their means add up to the mean total.
    mean = {k: statistics.fmean(s[k] for s in per_step) for k in per_step[0]}
    compute = median["total"] - median["data"]
    batch_size = int(cfg.dataloader.train.total_batch_size)
    return {
        "unit": "s/iter",
        "s_per_iter": median["total"],
        "shares": {k: v / mean["total"] for k, v in mean.items() if k != "total"},
        "stage_seconds": median,
        "images_per_s_consumed": batch_size / compute,
        "work": {"model": cfg.model.backbone.bottom_up.name + "-" + str(cfg.model.backbone.bottom_up.depth) + " FPN (the default job)",
                 "batch": batch_size, "input_min_size": list(cfg.input.train.min_size), "steps": steps},
    }


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
    import copy
    import importlib.util

    import numpy as np

    from framework.evaluation.coco_evaluation import evaluate_coco_results, load_coco_gt

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
    start = time.perf_counter()
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        for task in ("bbox", "segm"):
            evaluate_coco_results(copy.deepcopy(coco), results, task)
    out["results"]["pycocotools"] = time.perf_counter() - start
    if importlib.util.find_spec("faster_coco_eval") is not None:
        from faster_coco_eval import COCO as FastCOCO
        from faster_coco_eval import COCOeval_faster

        start = time.perf_counter()
        for task in ("bbox", "segm"):
            gt = FastCOCO(str(gt_json))
            dt = gt.loadRes(copy.deepcopy(results))
            ev = COCOeval_faster(gt, dt, task, print_function=lambda *a, **k: None)
            ev.evaluate(), ev.accumulate(), ev.summarize()
        out["results"]["faster-coco-eval"] = time.perf_counter() - start
    else:
        out["results"]["faster-coco-eval"] = "not installed (pip install faster-coco-eval)"
    return out


def section_peak(args, device, workdir: Path) -> dict[str, Any]:
    import torch

    from framework.utils.measure import compare_alternating

    def rate(fn: Callable[[], Any], flops: float) -> float:
        return flops / compare_alternating({"x": fn}, repeats=args.repeats, warmup=1)["x"].median / 1e9

    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x = torch.randn(1, 256, 100, 136, device=device)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device).eval()
    conv_flops = 2 * 256 * 256 * 9 * 100 * 136
    out: dict[str, Any] = {"unit": "GFLOP/s", "results": {}}
    with torch.inference_mode():
        out["results"]["matmul 2048x2048, fp32"] = rate(lambda: a @ b, 2 * n**3)
        out["results"]["conv 3x3 256->256 at 100x136, NCHW fp32"] = rate(lambda: conv(x), conv_flops)
        conv_cl, x_cl = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        out["results"]["conv 3x3 256->256 at 100x136, channels_last fp32"] = rate(lambda: conv_cl(x_cl), conv_flops)
    return out


def _ratio_result(unit: str, timings, work: dict[str, Any]) -> dict[str, Any]:
    ours, tv = timings["ours"], timings["torchvision"]
    equal = (work["input_size"]["ours"] == work["input_size"]["torchvision"]
             and work["proposals"]["ours"] == work["proposals"]["torchvision"]
             and work.get("detections", {}).get("ours") == work.get("detections", {}).get("torchvision"))
    rss = (ours.peak_rss_mb / tv.peak_rss_mb) if ours.peak_rss_mb and tv.peak_rss_mb else None
    cuda = (ours.peak_cuda_mb / tv.peak_cuda_mb) if ours.peak_cuda_mb and tv.peak_cuda_mb else None
    return {"unit": unit, "ours": ours.as_dict(), "torchvision": tv.as_dict(), "ratio": ours.median / tv.median,
            "peak_rss_ratio": rss, "peak_cuda_ratio": cuda, "equal_work": equal, "work": work}


# ----------------------------------------------------------------------------------- report
def machine_info(device) -> dict[str, Any]:
    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['threads']} threads, {m.get('gpu', 'CPU')}; torch {m['torch']}, "
             f"torchvision {m['torchvision']}, Python {m['python']}. Mode: {'quick' if report['quick'] else 'full'}, "
             f"{report['repeats']} timed runs per side.", ""]
    rows = []
    for name in ("inference", "train"):
        r = report["sections"].get(name)
        if not r:
            continue
        mem = f"{r['peak_rss_ratio']:.2f}" if r["peak_rss_ratio"] else "n/a"
        if r.get("peak_cuda_ratio"):
            mem += f" (CUDA {r['peak_cuda_ratio']:.2f})"
        rows.append(f"| {name}, {r['unit']} | {r['torchvision']['median_s']:.3f} | {r['ours']['median_s']:.3f} | "
                    f"**{r['ratio']:.2f}** | {mem} | {'yes' if r['equal_work'] else 'NO'} |")
        for variant, v in r.get("variants", {}).items():
            note = "" if variant != "bf16" else (" (native bf16)" if r.get("cpu_bf16_native") else " (emulated: no AVX512_BF16/AMX)")
            rows.append(f"| {name}, {r['unit']}, ours {variant}{note} vs torchvision fp32 | {r['torchvision']['median_s']:.3f} | "
                        f"{v['median_s']:.3f} | **{v['ratio_vs_torchvision_fp32']:.2f}** | n/a | {v['detections']} detections |")
    if rows:
        lines += ["| Mask R-CNN R50-FPN | torchvision | ours | ratio | peak memory ratio | equal work |",
                  "|---|---|---|---|---|---|", *rows, ""]
        for name in ("inference", "train"):
            r = report["sections"].get(name)
            if r:
                lines.append(f"- {name} work: " + json.dumps(r["work"], default=str))
        lines.append("")
    mj = report["sections"].get("main_job")
    if mj:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in mj["shares"].items())
        lines += [f"Main job ({mj['work']['model']}, batch {mj['work']['batch']}): {mj['s_per_iter']:.3f} s/iter; "
                  f"{shares}; it consumes {mj['images_per_s_consumed']:.1f} img/s.", ""]
    data = report["sections"].get("data")
    if data:
        lines += ["| data pipeline | img/s | x main job's consumption |", "|---|---|---|"]
        for k, v in data["results"].items():
            x = f"{v['x_main_job']:.1f}" if v["x_main_job"] else "n/a"
            lines.append(f"| {k} | {v['img_per_s']:.1f} | {x} |")
        lines.append("")
    ev = report["sections"].get("eval")
    if ev:
        parts = [f"{k} {v:.2f} s" if isinstance(v, float) else f"{k}: {v}" for k, v in ev["results"].items()]
        lines += [f"Evaluation of {ev['predictions']} box + mask predictions: " + "; ".join(parts) + ".", ""]
    peak = report["sections"].get("peak")
    inference = report["sections"].get("inference")
    if peak or inference:
        lines += ["| throughput | GFLOP/s |", "|---|---|"]
        lines += [f"| {k} (peak on the spot) | {v:.0f} |" for k, v in (peak or {}).get("results", {}).items()]
        for name, rate in (inference or {}).get("achieved_gflop_per_s", {}).items():
            lines.append(f"| Mask R-CNN R50-FPN inference, {name} ({inference['gflops'][name]:.0f} GFLOP/img) | {rate:.0f} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed runs per side, fewer data batches (< 5 min on 2 cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, 3 with --quick)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--variants", nargs="*", choices=("bf16", "compile"), default=[],
                        help="inference also with ours in bf16 autocast / with torch.compile (backbone, mask head)")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown here")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    import tempfile

    import torch

    from framework.engine.builders import resolve_device

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report: dict[str, Any] = {"machine": machine_info(device), "quick": args.quick, "repeats": args.repeats, "sections": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in SECTIONS:
            if name not in args.sections:
                continue
            t0 = time.perf_counter()
            print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
            if name == "data":
                consumed = report["sections"].get("main_job", {}).get("images_per_s_consumed")
                result = section_data(args, device, Path(tmp), consumed)
            else:
                result = globals()[f"section_{name}"](args, device, Path(tmp))
            result["section_seconds"] = time.perf_counter() - t0
            report["sections"][name] = result
    report["total_seconds"] = time.perf_counter() - started
    markdown = to_markdown(report)
    print(markdown)
    print(f"(benchmark took {report['total_seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.markdown:
        args.markdown.write_text(markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
