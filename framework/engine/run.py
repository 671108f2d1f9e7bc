"""The main job behind tools/train_net.py: data, model, trainer, evaluation, TensorBoard, from a config.

Each step is a small function of the composed config, so a notebook or another entry point can
reuse them (``build_datasets``, ``build_model`` from :mod:`framework.engine.builders`, ``evaluate_model``,
:func:`framework.engine.train_job.train`).
The run directory receives: ``config.yaml`` (resolved), Hydra's ``.hydra/`` (composed config and
overrides), ``log.txt``, ``metrics.jsonl`` (training scalars), ``metrics.json`` (final metrics),
checkpoints, ``inference/coco_instances_results.json`` and TensorBoard event files.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from framework.config.compose import validate_config
from framework.engine.builders import (
    Datasets,
    build_datasets,
    build_mapper,
    build_model,
    register_split,
    resolve_device,
    to_kwargs,
    write_json,
)
from framework.errors import ConfigError
from framework.utils import comm
from framework.utils.seeding import seed_everything

__all__ = [
    "main_job",
    "run",
    "build_model",
    "build_datasets",
    "build_mapper",
    "Datasets",
    "evaluate_model",
    "final_metric",
    "register_split",
    "resolve_device",
]

logger = logging.getLogger("framework")

#: The metric a run returns to Hydra (for sweepers such as optuna): mask AP when there is a mask head.
PRIMARY_METRICS = ("segm/AP", "bbox/AP")


def evaluate_model(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path) -> dict:
    """Run the config's ``evaluators`` over the test split; their files go to ``output_dir/inference``."""
    from framework.data.build import build_test_loader
    from framework.engine.builders import build_evaluator
    from framework.evaluation.evaluator import inference_on_dataset, results_table

    evaluator = build_evaluator(cfg, data.metadata, output_dir / "inference", data.test)
    loader = build_test_loader(data.test, build_mapper(cfg, "test"), **to_kwargs(cfg.dataloader.test))
    results = inference_on_dataset(model, loader, evaluator)
    if results:
        logger.info(f"Evaluation on {data.test_name}:\n{results_table(results)}")
    return results


def final_metric(metrics: dict[str, float]) -> Optional[float]:
    for key in PRIMARY_METRICS:
        if key in metrics and not math.isnan(metrics[key]):
            return metrics[key]
    return None


def _hydra_context() -> tuple[Optional[Path], list[str], bool]:
    """(output dir, task overrides, is multirun) when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, [], False
    hc = HydraConfig.get()
    from hydra.types import RunMode

    return Path(hc.runtime.output_dir), list(hc.overrides.task), hc.mode == RunMode.MULTIRUN


def _setup_logging(output_dir: Path) -> None:
    """Rank 0: INFO to the console and ``log.txt``; other ranks: warnings and errors to the console."""
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    if not comm.is_main_process():
        root.setLevel(logging.WARNING)
        return
    fh = logging.FileHandler(output_dir / "log.txt")
    fh.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s"))
    root.addHandler(fh)
    root.setLevel(logging.INFO)


def main_job(cfg: DictConfig) -> Optional[float]:
    """The Hydra task: :func:`run` on every process of the run (one, spawned, torchrun's or SLURM's).

    With several processes every rank runs rank 0's config, fully resolved (``${now:}`` and
    ``${hydra:}`` included) and rank 0's output directory (see :func:`framework.engine.launch.launch`).
    """
    from framework.engine.launch import distributed_env, launch

    output_dir, overrides, multirun = _hydra_context()
    dist_kwargs = to_kwargs(cfg.dist)
    if dist_kwargs["num_procs"] > 1 or distributed_env() is not None:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        OmegaConf.set_struct(cfg, True)
    device_type = resolve_device(str(cfg.device)).type
    return launch(_run_rank, (cfg, output_dir, overrides, multirun), device_type, **dist_kwargs)


def _run_rank(cfg: DictConfig, output_dir: Optional[Path], overrides: list[str], multirun: bool) -> Optional[float]:
    from framework.config.compose import setup

    setup()  # a spawned rank starts from a fresh interpreter: register components and plugins
    return run(cfg, output_dir=output_dir, overrides=overrides, multirun=multirun)


def run(
    cfg: DictConfig,
    *,
    output_dir: Optional[Path] = None,
    overrides: Optional[list[str]] = None,
    multirun: Optional[bool] = None,
) -> Optional[float]:
    """Train and/or evaluate as the config says, in this process; return the primary final metric
    (for sweepers). ``output_dir``, ``overrides`` and ``multirun`` default to Hydra's (when running
    under Hydra). In a process group (see :func:`main_job`) every rank calls this; rank 0 writes
    the run directory's files and returns the metric."""
    hydra_dir, hydra_overrides, hydra_multirun = _hydra_context()
    output_dir = Path(output_dir or hydra_dir or "outputs/run")
    overrides = hydra_overrides if overrides is None else overrides
    multirun = hydra_multirun if multirun is None else multirun
    output_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(output_dir)
    validate_config(cfg)
    if comm.is_main_process():
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if comm.get_world_size() > 1:
        logger.info(f"Distributed run: {comm.get_world_size()} processes, this is rank {comm.get_rank()}")
    seed_everything(int(cfg.seed))
    device = resolve_device(str(cfg.device))

    data = build_datasets(cfg, need_train=not cfg.eval_only)
    model = build_model(cfg, device)

    if cfg.eval_only:
        from framework.checkpoint import Checkpointer

        ckpt = Checkpointer(model, str(output_dir), skip_mismatch=bool(cfg.get("weights_skip_mismatch", False)))
        path = cfg.weights or (ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None)
        if not path:
            raise ConfigError("eval_only=true needs weights=<checkpoint> (or a run directory with a last_checkpoint)")
        ckpt.load(path, checkpointables=[])
        results = evaluate_model(cfg, model, data, output_dir)
        metrics = _flatten(results)
        if comm.is_main_process():
            write_json(output_dir / "metrics.json", {"iteration": None, "weights": str(path), **metrics})
            _print_summary(metrics)
        return final_metric(metrics)

    from framework.engine.train_job import train

    metrics = train(cfg, model, data, output_dir, overrides=overrides, multirun=multirun, evaluate=evaluate_model)
    if comm.is_main_process():
        _print_summary(metrics)
    return final_metric(metrics)


def _flatten(results: dict) -> dict[str, float]:
    from framework.engine.hooks import flatten_results_dict

    return {k: float(v) for k, v in flatten_results_dict(results).items()}


def _print_summary(metrics: dict[str, float]) -> None:
    parts = [f"{task} AP = {metrics[f'{task}/AP']:.2f}" for task in ("bbox", "segm") if f"{task}/AP" in metrics]
    if parts:
        print("Final: " + ", ".join(parts) + " (COCO AP@[.5:.95], %)", flush=True)
