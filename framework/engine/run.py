"""One process's part of a run: set up the run directory, build data and model, then train or
evaluate. Every process of a run calls :func:`run` (see :mod:`framework.engine.launch`).

The run directory receives: ``config.yaml`` (resolved), Hydra's ``.hydra/`` (composed config and
overrides), ``log.txt``, ``metrics.jsonl`` (training scalars), ``metrics.json`` (final metrics),
checkpoints, ``inference/coco_instances_results.json`` (with the evaluator's analysis: ``errors.*``,
``pr_curves_*.png``) and TensorBoard event files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from framework.config.compose import validate_config
from framework.engine.builders import build_datasets, build_model, resolve_device, write_json
from framework.errors import ConfigError
from framework.evaluation.evaluator import primary_metric
from framework.utils import comm
from framework.utils.seeding import seed_everything

__all__ = ["run", "run_rank"]

logger = logging.getLogger("framework")


def run_rank(cfg: DictConfig, output_dir: Optional[Path], overrides: list[str]) -> Optional[float]:
    """:func:`run` in a process of a launched run (a spawned one starts from a fresh interpreter, so
    components and plugins are registered first)."""
    from framework.config.compose import setup

    setup()
    return run(cfg, output_dir=output_dir, overrides=overrides)


def run(cfg: DictConfig, *, output_dir: Optional[Path] = None, overrides: Optional[list[str]] = None) -> Optional[float]:
    """Train and/or evaluate as the config says, in this process; return the primary final metric
    (``segm/AP``, else ``bbox/AP``; for sweepers). Rank 0 writes the run directory's files.

    Args:
        output_dir: the run directory (default ``outputs/run``).
        overrides: the command line's overrides (TensorBoard hparams, the run's log).
    """
    output_dir = Path(output_dir or "outputs/run")
    output_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(output_dir)
    validate_config(cfg)
    if comm.is_main_process():
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if comm.get_world_size() > 1:
        logger.info(f"Distributed run: {comm.get_world_size()} processes, this is rank {comm.get_rank()}")
    seed_everything(int(cfg.seed))

    data = build_datasets(cfg, need_train=not cfg.eval_only)
    model = build_model(cfg, resolve_device(str(cfg.device)))
    if cfg.eval_only:
        metrics = _evaluate_weights(cfg, model, data, output_dir)
    else:
        from framework.engine.train_job import train

        metrics = train(cfg, model, data, output_dir, overrides=list(overrides or []))
    if comm.is_main_process():
        _print_summary(metrics)
    key = primary_metric(metrics)
    return None if key is None or metrics[key] != metrics[key] else metrics[key]


def _evaluate_weights(cfg: DictConfig, model, data, output_dir: Path) -> dict[str, float]:
    """``eval_only``: load ``weights`` (or the run's last checkpoint) and evaluate them once."""
    from framework.checkpoint import Checkpointer
    from framework.engine.evaluation import build_evaluation

    ckpt = Checkpointer(model, str(output_dir), skip_mismatch=bool(cfg.get("weights_skip_mismatch", False)))
    path = cfg.weights or (ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None)
    if not path:
        raise ConfigError("eval_only=true needs weights=<checkpoint> (or a run directory with a last_checkpoint)")
    ckpt.load(path, checkpointables=[])
    metrics = build_evaluation(cfg, model, data, output_dir).final()  # with tta: also the TTA metrics
    if comm.is_main_process():
        write_json(output_dir / "metrics.json", {"iteration": None, "weights": str(path), **metrics})
    return metrics


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


def _print_summary(metrics: dict[str, float]) -> None:
    parts = [f"{task} AP = {metrics[f'{task}/AP']:.2f}" for task in ("bbox", "segm") if f"{task}/AP" in metrics]
    if parts:
        print("Final: " + ", ".join(parts) + " (COCO AP@[.5:.95], %)", flush=True)
