#!/usr/bin/env python
"""Train and/or evaluate a model: the Hydra entry point.

    python tools/train_net.py                                  # the default job (configs/train.yaml)
    python tools/train_net.py --cfg job model=faster_rcnn_R_50_FPN model.rpn.nms_thresh=0.6
    python tools/train_net.py -m solver.base_lr=0.01,0.02 model/roi_pooler=ROIAlign,ROIAlignV2

Before Hydra runs anything, the command line is composed once per choice it makes (every value of
every sweep), so a typo'd key, group option or component name fails at once with a
"did you mean" message, before any model is built or any job of a sweep starts.
"""

from __future__ import annotations

import sys

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from framework.config.compose import CONFIG_DIR, check_command_line, setup
from framework.errors import ConfigError


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from framework.engine.run import run

    return run(cfg)


def preflight(argv: list[str]) -> None:
    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    config_name = args.config_name or "train"
    check_command_line(args.overrides, config_name=config_name, config_dir=args.config_dir or CONFIG_DIR)


if __name__ == "__main__":
    setup()
    try:
        preflight(sys.argv[1:])
    except ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        sys.exit(2)
    main()
