"""Assemble the trainer of a run: loaders, optimizer, schedule, checkpointer, hooks, loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from framework.utils import comm

__all__ = ["train"]

logger = logging.getLogger("framework")


def _load_gt(d: dict) -> tuple[torch.Tensor, Any]:
    """A dataset dict's image (RGB uint8) and its non-crowd ground truth at the original size."""
    from framework.data.detection_utils import annotations_to_instances, read_image

    image = read_image(d["file_name"], "RGB")
    annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    return image, annotations_to_instances(annos, (image.shape[1], image.shape[2]))


def _requeued(checkpointer: Any) -> bool:
    """A submitit job (SLURM, local executor) whose run directory already has a last checkpoint is a
    requeued one (after a preemption or a timeout): it resumes, whatever ``resume`` says."""
    from framework.engine.launch import submitit_job_id

    job_id = submitit_job_id()
    if job_id is None or not checkpointer.has_checkpoint():
        return False
    logger.info(f"submitit job {job_id}: resuming from {checkpointer.get_checkpoint_file()} (requeued after a "
                "preemption or a timeout)")
    return True


def train(
    cfg: DictConfig,
    model: torch.nn.Module,
    data: Any,
    output_dir: Path,
    *,
    overrides: list[str],
    multirun: bool,
    evaluate: Callable[[DictConfig, torch.nn.Module, Any, Path], dict],
) -> dict[str, float]:
    """Train ``model`` per ``cfg`` (resuming when ``cfg.resume``); return the final metrics."""
    from framework.checkpoint import Checkpointer
    from framework.data.build import build_train_loader
    from framework.engine.ddp import create_ddp_model
    from framework.engine.builders import build_loggers, build_mapper, hparams_from_overrides, to_kwargs, write_json
    from framework.engine.hooks import VisualizationData, build_hooks
    from framework.engine.lr_scheduler import build_lr_scheduler
    from framework.engine.optim import build_optimizer
    from framework.engine.trainer import Trainer

    max_iter = int(cfg.train.max_iter)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_lr_scheduler(optimizer, cfg.lr_scheduler, max_iter=max_iter)
    checkpointer = Checkpointer(model, str(output_dir), skip_mismatch=bool(cfg.get("weights_skip_mismatch", False)))
    hooks = build_hooks(cfg.hooks)
    # Only rank 0 logs metrics (its losses are the mean over ranks), writes TensorBoard and checkpoints.
    writers = build_loggers(cfg, output_dir) if comm.is_main_process() else []

    def test_fn() -> dict:
        comm.broadcast_buffers(model)  # every rank evaluates the model rank 0 checkpoints
        return evaluate(cfg, model, data, output_dir)

    try:
        trainer = Trainer(
            model=create_ddp_model(model, **to_kwargs(cfg.ddp)),
            data_loader=None,
            optimizer=optimizer,
            scheduler=scheduler,
            checkpointer=checkpointer,
            max_iter=max_iter,
            hooks=hooks,
            writers=writers,
            amp=cfg.train.amp,
            grad_clip=to_kwargs(cfg.train.grad_clip) if cfg.train.grad_clip is not None else None,
            test_fn=test_fn,
            seed=int(cfg.seed),
            max_nonfinite_steps=int(cfg.train.max_nonfinite_steps),
        )
        trainer.vis_data = VisualizationData(
            dataset_dicts=data.test,
            mapper=build_mapper(cfg, "test"),
            class_names=list(data.metadata.thing_classes),
            colors=[tuple(c) for c in data.metadata.thing_colors],
            load_gt=_load_gt,
        )
        resume = bool(cfg.resume) or _requeued(checkpointer)
        start_iter = trainer.resume_or_load(cfg.weights, resume=resume)
        if cfg.resume and start_iter == 0:
            logger.warning(f"resume=true but {output_dir} has no last_checkpoint: starting from scratch")
        loader_cfg = to_kwargs(cfg.dataloader.train)
        loader_cfg["start_iter"] = start_iter
        trainer.data_loader = build_train_loader(data.train, build_mapper(cfg, "train"), **loader_cfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        for w in writers:
            w.log_run(resolved, list(overrides), start_iter)

        if start_iter < max_iter:
            trainer.train(start_iter, max_iter)
        metrics = dict(trainer.latest_metrics or {})
        if comm.is_main_process():
            write_json(output_dir / "metrics.json", {"iteration": trainer.iter, **metrics})
        if metrics:
            # One row per run: the swept values against the final metrics (compare runs of a sweep).
            hparams = hparams_from_overrides(overrides)
            for w in writers:
                w.log_final(hparams, metrics)
    finally:
        for w in writers:
            w.close()
    return metrics
