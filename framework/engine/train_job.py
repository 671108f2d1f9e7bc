"""A training run, built in one place: :func:`build_training` makes every part from the config, top
to bottom, and the trainer last, complete; :func:`train` runs it and writes the final metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from framework.checkpoint import Checkpointer
from framework.data.build import build_train_loader
from framework.engine.builders import (
    Datasets,
    bad_data_policy,
    build_loggers,
    build_mapper,
    hparams_from_overrides,
    to_kwargs,
    write_json,
)
from framework.engine.ddp import create_ddp_model
from framework.engine.evaluation import build_evaluation
from framework.engine.hooks import VisualizationData, build_hooks
from framework.engine.lr_scheduler import build_lr_scheduler
from framework.engine.optim import build_optimizer
from framework.engine.resume import Start, resume_or_load
from framework.engine.trainer import Trainer
from framework.utils import comm

__all__ = ["Training", "build_training", "train"]

logger = logging.getLogger("framework")


@dataclass
class Training:
    """What :func:`build_training` makes: the trainer, the writers it logs to (closed by the
    caller), and where it starts."""

    trainer: Trainer
    writers: list[Any]
    start: Start


def build_training(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path) -> Training:
    """Every part of a training run of ``model`` on ``data``, from the config; nothing is changed
    on any of them afterwards."""
    max_iter = int(cfg.train.max_iter)
    optimizer = build_optimizer(model, cfg.solver)
    scheduler = build_lr_scheduler(optimizer, cfg.lr_scheduler, max_iter=max_iter)
    checkpointer = Checkpointer(model, str(output_dir), skip_mismatch=bool(cfg.weights_skip_mismatch),
                                optimizer=optimizer, scheduler=scheduler)
    # Where training starts is known before the loader is built: it yields that iteration's batch first.
    start = resume_or_load(checkpointer, cfg.weights, resume=bool(cfg.resume) or _requeued(checkpointer))
    if cfg.resume and start.iteration == 0:
        logger.warning(f"resume=true but {output_dir} has no last_checkpoint: starting from scratch")
    train_loader = build_train_loader(data.train, build_mapper(cfg, "train"),
                                      **{**to_kwargs(cfg.dataloader.train), "start_iter": start.iteration})
    evaluation = build_evaluation(cfg, model, data, output_dir)
    # Only rank 0 logs metrics (its losses are the mean over ranks), writes TensorBoard and checkpoints.
    writers = build_loggers(cfg, output_dir) if comm.is_main_process() else []
    try:
        # Each hook takes, by name, what its constructor asks for of these (docs/training.md).
        hooks = build_hooks(cfg.hooks, offered={
            "model": model,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "checkpointer": checkpointer,
            "writers": writers,
            "evaluate": evaluation,
            "evaluate_final": evaluation.final,
            "metric_names": evaluation.metric_names,
            "vis_data": _visualization_data(cfg, data),
            "output_dir": str(output_dir),
        })
        trainer = Trainer(
            model=create_ddp_model(model, **to_kwargs(cfg.ddp)),
            data_loader=train_loader,
            optimizer=optimizer,
            checkpointer=checkpointer,
            max_iter=max_iter,
            hooks=hooks,
            amp=cfg.train.amp,
            grad_clip=to_kwargs(cfg.train.grad_clip) if cfg.train.grad_clip is not None else None,
            seed=int(cfg.seed),
            max_nonfinite_steps=int(cfg.train.max_nonfinite_steps),
        )
        if start.trainer_state is not None:
            trainer.load_state_dict(start.trainer_state)
    except BaseException:
        for w in writers:
            w.close()
        raise
    return Training(trainer=trainer, writers=writers, start=start)


def train(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path, *,
          overrides: list[str]) -> dict[str, float]:
    """Train ``model`` per ``cfg`` (resuming when ``cfg.resume``); return the final metrics (those
    of the last evaluation; ``{}`` without one), also written to ``metrics.json``."""
    training = build_training(cfg, model, data, output_dir)
    trainer, writers = training.trainer, training.writers
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        for w in writers:
            w.log_run(resolved, list(overrides), training.start.iteration)
        metrics = trainer.train() if training.start.iteration < trainer.max_iter else {}
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


def _visualization_data(cfg: DictConfig, data: Datasets) -> VisualizationData:
    """The test set as the VisualizationHook draws it; under ``bad_data=skip`` an unreadable image
    is left out of the drawing, as it is of the evaluation."""
    from framework.data.skipping import BAD_IMAGE_ERRORS

    skip = bad_data_policy(cfg) == "skip"
    return VisualizationData(
        dataset_dicts=data.test,
        mapper=build_mapper(cfg, "test"),
        class_names=list(data.metadata.thing_classes),
        colors=[tuple(c) for c in data.metadata.thing_colors],
        load_gt=_load_gt,
        skip_errors=BAD_IMAGE_ERRORS if skip else (),
    )


def _load_gt(d: dict) -> tuple[torch.Tensor, Any]:
    """A dataset dict's image (RGB uint8) and its non-crowd ground truth at the original size."""
    from framework.data.detection_utils import annotations_to_instances, check_image_size, read_image

    image = read_image(d["file_name"], "RGB")
    check_image_size(d, image)  # as the mapper does: a file of another size than its dict is a bad image
    annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    return image, annotations_to_instances(annos, (image.shape[1], image.shape[2]))


def _requeued(checkpointer: Any) -> bool:
    """A submitit job (SLURM, local executor) whose run directory already has a last checkpoint is a
    requeued one (after a preemption or a timeout): it resumes, whatever ``resume`` says."""
    job_id = comm.submitit_job_id()
    if job_id is None or not checkpointer.has_checkpoint():
        return False
    logger.info(f"submitit job {job_id}: resuming from {checkpointer.get_checkpoint_file()} (requeued after a "
                "preemption or a timeout)")
    return True
