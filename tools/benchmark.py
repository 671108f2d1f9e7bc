#!/usr/bin/env python
"""Speed of this framework against torchvision, measured in the same process, same threads.

    python tools/benchmark.py --quick                       # < 5 minutes on 2 CPU cores
    python tools/benchmark.py --json bench.json --markdown bench.md
    python tools/benchmark.py --sections inference train --repeats 7 --device cuda
    python tools/benchmark.py --sections inference --variants bf16 compile

Sections (``--sections``, default all but the opt-in ones):

* ``inference``: Mask R-CNN R50-FPN, batch 1, a COCO image (../shared/data/coco_tiny when present,
  else a generated 480x640 one) resized to 800 px (``--test-size``) by both models, eval mode. torchvision's
  ``maskrcnn_resnet50_fpn`` layout is built with a fixed seed (BatchNorm statistics calibrated on
  the image, then frozen) and its weights are loaded into ``experiment=torchvision_R_50_FPN_coco``,
  so both run the same network; the score threshold is 0 so both send 100 detections through the
  mask head. s/img, peak RSS (CUDA memory on a GPU). ``--variants bf16 compile`` adds ours with
  ``model.inference_amp=bf16`` and with the backbone and mask head through ``torch.compile``,
  each against torchvision in fp32 (eager), in the same alternation.
* ``train``: one iteration (forward, backward, SGD step) of the same two models on 2 images of
  512x768 with 8 boxes and masks each, the same sampling settings on both sides; s/iter, peak RSS.
  ``--variants bf16`` adds ours with the forward under bf16 autocast (what ``train.amp=bf16`` runs).
* ``main_job``: the default job's model and data (configs/train.yaml): s/iter of a training step
  and the share of each stage (data wait, backbone, RPN, RoI heads, backward, optimizer);
  ``--variants bf16`` adds the same steps in bf16, alternating with float32 on the same batches.
* ``data``: mapper + loader throughput of the default job's train pipeline in img/s, with 0 and N
  workers, on synthetic_train and on coco_tiny train (when present), against what the main job's
  step consumes.
* ``eval``: seconds for pycocotools (and faster-coco-eval, when installed) to evaluate a fixed set
  of box + mask predictions on a COCO-format val set.
* ``peak``: matmul and 3x3 convolution GFLOP/s measured on the spot, float32 and bfloat16, NCHW
  and channels_last; run whenever a model section is. Each model figure's **roofline fraction**
  is its counted work (torch.utils.flop_counter: 2 flops per multiply-add of convolutions and
  matrix products, backward included in training; RoIAlign and NMS are not counted) per median
  second, over the convolution peak in the dtype and layout it ran in (tools/bench/roofline.py).
* ``export`` (opt-in, only when named): the main job's model and Mask R-CNN R50-FPN (resized to
  ``--test-size``) each exported to ONNX and torch.export (tools/export_model.py's code), then
  eager ``Predictor``, onnxruntime and the torch.export program on the same image, alternating:
  s/img, peak RSS and their ratios to eager, and the export's seconds (docs/deployment.md).

Each model figure is ours / torchvision's: runs alternate (A, B, A, B, ...) after a warm-up, and
the medians are compared. Equal work is verified and printed (input size, proposals, detections).
The report names the CPU and its features (AVX2, AVX-512, AVX512_BF16, AMX), and the variables
that restrict them when set (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` measures an
AVX-512 machine as an AVX2 one).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

from bench import sections
from bench.report import cpu_ticks, machine_info, steal_share, to_markdown
from bench.roofline import add_fractions
from bench.sections import OPT_IN_SECTIONS, SECTIONS


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed runs per side, fewer data batches (< 5 min on 2 cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5, 3 with --quick)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS + OPT_IN_SECTIONS, default=list(SECTIONS),
                        help=f"default: {' '.join(SECTIONS)}; opt-in: {' '.join(OPT_IN_SECTIONS)}")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--test-size", type=int, nargs=2, default=(800, 1333), metavar=("MIN", "MAX"),
                        help="inference: shortest edge and longest-edge cap both models resize to (default 800 1333)")
    parser.add_argument("--variants", nargs="*", choices=("bf16", "compile"), default=[],
                        help="inference (and with bf16 training) also with ours in bf16 autocast / with torch.compile (backbone, mask head)")
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
    from framework.utils.onednn import enlarge_primitive_cache

    enlarge_primitive_cache()  # as launch() does for a run, before the first convolution: both sides get it
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report: dict[str, Any] = {"machine": machine_info(device), "quick": args.quick, "repeats": args.repeats, "sections": {}}
    if {"inference", "train", "main_job"} & set(args.sections) and "peak" not in args.sections:
        args.sections = [*args.sections, "peak"]  # the rooflines of the model sections
    started, ticks_started = time.perf_counter(), cpu_ticks()
    with tempfile.TemporaryDirectory() as tmp:
        for name in SECTIONS + OPT_IN_SECTIONS:
            if name not in args.sections:
                continue
            t0, ticks0 = time.perf_counter(), cpu_ticks()
            print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
            if name == "data":
                consumed = report["sections"].get("main_job", {}).get("images_per_s_consumed")
                result = sections.section_data(args, device, Path(tmp), consumed)
            else:
                result = getattr(sections, f"section_{name}")(args, device, Path(tmp))
            result["section_seconds"] = time.perf_counter() - t0
            result["cpu_steal"] = steal_share(ticks0, cpu_ticks())
            report["sections"][name] = result
    add_fractions(report)
    report["total_seconds"] = time.perf_counter() - started
    report["cpu_steal"] = steal_share(ticks_started, cpu_ticks())
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
