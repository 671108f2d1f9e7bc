"""The ``framework-train`` command (and ``tools/train_net.py``): train and/or evaluate from a config.

    framework-train                                   # the default job (configs/train.yaml)
    framework-train --cfg job model=faster_rcnn_R_50_FPN model.rpn.nms_thresh=0.6
    framework-train -m solver.base_lr=0.01,0.02 model/roi_pooler=ROIAlign,ROIAlignV2
    framework-train --config-dir my_configs model=my_preset   # your own config folder, searched first
    framework-train --projects ~/my_repo/projects model/roi_heads/mask_head=MyHead   # plugins of another folder

Before Hydra runs anything, the command line is composed once per choice it makes (every value of
every sweep), so a typo'd key, group option or component name fails at once with a
"did you mean" message, before any model is built or any job of a sweep starts.

Bad input found later (a weights file that does not fit the model or would run code, a malformed
dataset) ends a single run with its one message and exit code 2; HYDRA_FULL_ERROR=1 shows the
traceback. In a sweep the job fails as Hydra reports it.

The configs are the repository's ``configs/`` in a clone and the copy shipped inside the package
when installed with ``pip install .`` (:data:`framework.config.compose.CONFIG_DIR`), so the
command runs from any directory; outputs go under the current one.

Plugins come from the repository's ``projects/``, installed packages (entry points) and the folders
of ``--projects DIR[:DIR...]`` (any number of times) and ``$FRAMEWORK_PROJECTS``; the current
directory's ``projects/`` only when named so (``--projects projects``). ``--projects`` is taken out
of the command line before Hydra reads it (see :mod:`framework.config.plugins`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from framework.config.compose import CONFIG_DIR, check_command_line, setup
from framework.config.plugins import add_project_dirs, split_projects_flag
from framework.errors import ConfigError, InputError

__all__ = ["main"]


def _task(cfg: DictConfig) -> float | None:
    """The Hydra task: :func:`framework.engine.run.run_rank` on every process of the run (one,
    spawned, torchrun's or SLURM's; see :func:`framework.engine.launch.launch`).

    With several processes every rank runs rank 0's config, fully resolved (``${now:}`` and
    ``${hydra:}`` included) and rank 0's output directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from framework.engine.builders import resolve_device, to_kwargs
    from framework.engine.launch import distributed_env, launch
    from framework.engine.run import run_rank

    hydra = HydraConfig.get()
    output_dir, overrides = Path(hydra.runtime.output_dir), list(hydra.overrides.task)
    try:
        dist_kwargs = to_kwargs(cfg.dist)
        if dist_kwargs["num_procs"] > 1 or distributed_env() is not None:
            cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            OmegaConf.set_struct(cfg, True)
        device_type = resolve_device(str(cfg.device)).type
        return launch(run_rank, (cfg, output_dir, overrides), device_type, **dist_kwargs)
    except InputError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or hydra.mode == RunMode.MULTIRUN:
            raise
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


def preflight(argv: list[str]) -> None:
    """Compose every choice of the command line ``argv`` (see :func:`check_command_line`)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    search_path = [args.config_dir] if args.config_dir else []
    check_command_line(args.overrides, config_name=args.config_name or "train", search_path=search_path)


def main() -> None:
    """Entry point: add the ``--projects`` folders, register components and plugins, check the
    command line, hand over to Hydra."""
    try:
        argv, folders = split_projects_flag(sys.argv[1:])
        add_project_dirs(folders)
    except ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv  # Hydra parses sys.argv itself, and refuses options it does not know
    setup()
    try:
        preflight(argv)
    except ConfigError as e:
        print(f"Config error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")(_task)()
