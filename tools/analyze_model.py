#!/usr/bin/env python
"""Parameters and FLOPs per module of any config's model (fvcore), as detectron2's analyze_model.

    python tools/analyze_model.py                                    # the default job's model
    python tools/analyze_model.py --tasks flop --num-images 5 model=mask_rcnn_R_50_FPN dataset.num_classes=80
    python tools/analyze_model.py --tasks parameter --depth 5 model/roi_heads/mask_head=LiteMaskHead

FLOPs are fvcore's (one multiply-add = one flop, i.e. GMACs) of inference on the first
``--num-images`` images of the config's test set after its test mapper (real sizes), averaged; the
model is randomly initialised unless ``weights=<checkpoint>`` is given, which changes how many
detections reach the mask head and so its FLOPs. RoIAlign, NMS and elementwise ops are not counted.
Trailing arguments are Hydra-style overrides of configs/train.yaml.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from framework.utils.cli import add_projects_flag, add_traceback_flag, run_tool


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=("flop", "parameter"), default=["parameter", "flop"])
    parser.add_argument("--depth", type=int, default=3, help="module nesting depth of the tables")
    parser.add_argument("--num-images", type=int, default=1, help="test images the FLOPs are averaged over")
    add_traceback_flag(parser)
    add_projects_flag(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra-style overrides of configs/train.yaml")
    args = parser.parse_args(argv)
    if args.depth < 1 or args.num_images < 1:
        parser.error("--depth and --num-images must be >= 1")
    return args


def run(args: argparse.Namespace) -> int:
    import torch

    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.engine.builders import build_datasets, build_mapper, build_model
    from framework.utils.analysis import flop_count_inference, parameter_table

    cfg = compose(args.overrides)
    model = build_model(cfg, torch.device("cpu")).eval()
    if cfg.weights:
        Checkpointer(model).load(str(cfg.weights), checkpointables=[])
    if "parameter" in args.tasks:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"Parameters: {total / 1e6:.3f}M ({trainable / 1e6:.3f}M trainable)\n")
        print(parameter_table(model, max_depth=args.depth) + "\n")
    if "flop" in args.tasks:
        from fvcore.nn import flop_count_table

        data = build_datasets(cfg, need_train=False)
        mapper = build_mapper(cfg, "test")
        dicts = data.test[: args.num_images]
        totals, last = [], None
        with torch.no_grad():
            for d in dicts:
                inputs = mapper(d)
                last = flop_count_inference(model, inputs)
                totals.append(last.total())
                h, w = inputs["image"].shape[-2:]
                print(f"{d['file_name']}: input {h}x{w}, {last.total() / 1e9:.3f} GFLOPs (multiply-adds)")
        mean = sum(totals) / len(totals)
        print(f"\nFLOPs: {mean / 1e9:.3f} G multiply-adds per image (mean of {len(totals)} on {data.test_name})\n")
        print(f"Per module (last image):\n{flop_count_table(last, max_depth=args.depth, show_param_shapes=False)}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return run_tool(run, args)


if __name__ == "__main__":
    sys.exit(main())
