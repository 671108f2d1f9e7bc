#!/usr/bin/env python
"""Train and/or evaluate a model: the Hydra entry point.

    python tools/train_net.py                                  # the default job (configs/train.yaml)
    python tools/train_net.py --cfg job model=faster_rcnn_R_50_FPN model.rpn.nms_thresh=0.6
    python tools/train_net.py -m solver.base_lr=0.01,0.02 model/roi_pooler=ROIAlign,ROIAlignV2

Before Hydra runs anything, the command line is composed once per choice it makes (every value of
every sweep), so a typo'd key, group option or component name fails at once with a
"did you mean" message, before any model is built or any job of a sweep starts.

Bad input found later (a weights file that does not fit the model or would run code, a malformed
dataset) ends a single run with its one message and exit code 2; HYDRA_FULL_ERROR=1 shows the
traceback. In a sweep the job fails as Hydra reports it.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from framework.config.compose import CONFIG_DIR, check_command_line, setup
from framework.errors import ConfigError, InputError


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from framework.engine.run import run

    try:
        return run(cfg)
    except InputError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


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
