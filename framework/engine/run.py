"""The main job behind tools/train_net.py: data, model, trainer, evaluation, TensorBoard, from a config.

Each step is a small function of the composed config, so a notebook or another entry point can
reuse them (``build_datasets``, ``build_model``, ``build_evaluation``, ``train``, ``evaluate``).
The run directory receives: ``config.yaml`` (resolved), Hydra's ``.hydra/`` (composed config and
overrides), ``log.txt``, ``metrics.jsonl`` (training scalars), ``metrics.json`` (final metrics),
checkpoints, ``inference/coco_instances_results.json`` and TensorBoard event files.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from framework.config.compose import validate_config
from framework.errors import ConfigError

__all__ = [
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


@dataclass
class Datasets:
    """The resolved training and test data of a run."""

    train: list[dict]
    test: list[dict]
    metadata: Any  # framework.data.catalog.Metadata of the test set
    train_name: str
    test_name: str


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... as a torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config path 'device': {device!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def register_split(split: DictConfig, path: str) -> str:
    """Register a ``{name, json, image_root}`` split from the config if it names files; return its name."""
    from framework.data import list_datasets, register_coco_instances, unregister_dataset

    name = split.name
    if split.get("json") is None:
        if name not in list_datasets():
            from framework.errors import did_you_mean

            raise ConfigError(
                f"config path '{path}.name': no dataset named {name!r}.{did_you_mean(name, list_datasets())} "
                f"Registered: {', '.join(list_datasets())}. To use a COCO json, also set {path}.json and {path}.image_root."
            )
        return name
    if split.get("image_root") is None:
        raise ConfigError(f"config path '{path}.image_root': the image folder of {split.json} is required")
    json_file, image_root = Path(split.json).expanduser().resolve(), Path(split.image_root).expanduser().resolve()
    if not json_file.is_file():
        raise ConfigError(f"config path '{path}.json': file not found: {json_file}")
    if not image_root.is_dir():
        raise ConfigError(f"config path '{path}.image_root': folder not found: {image_root}")
    if name in list_datasets():
        unregister_dataset(name)
    register_coco_instances(name, json_file=str(json_file), image_root=str(image_root))
    return name


def build_datasets(cfg: DictConfig, *, need_train: bool = True) -> Datasets:
    """Register the config's datasets if they are given as files, load them, and check the classes."""
    from framework.data import get_dataset, get_metadata

    train_name = register_split(cfg.dataset.train, "dataset.train")
    test_name = register_split(cfg.dataset.test, "dataset.test")
    metadata = get_metadata(test_name)
    num_classes = int(cfg.model.roi_heads.num_classes)
    if len(metadata.thing_classes) != num_classes:
        raise ConfigError(
            f"config path 'model.roi_heads.num_classes' (= dataset.num_classes) is {num_classes} but dataset "
            f"{test_name!r} has {len(metadata.thing_classes)} classes ({', '.join(metadata.thing_classes[:10])}"
            f"{', ...' if len(metadata.thing_classes) > 10 else ''}); set dataset.num_classes={len(metadata.thing_classes)}"
        )
    train = get_dataset(train_name) if need_train else []
    if need_train:
        train_meta = get_metadata(train_name)
        if list(train_meta.thing_classes) != list(metadata.thing_classes):
            raise ConfigError(
                f"datasets {train_name!r} and {test_name!r} have different classes: "
                f"{list(train_meta.thing_classes)} vs {list(metadata.thing_classes)}"
            )
    return Datasets(train=train, test=get_dataset(test_name), metadata=metadata, train_name=train_name, test_name=test_name)


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    from framework.registry import META_ARCHITECTURES

    model = META_ARCHITECTURES.build(cfg.model, path="model").to(device)
    n = sum(p.numel() for p in model.parameters())
    logger.info(f"Model: {cfg.model.name}, {n / 1e6:.2f}M parameters on {device}")
    return model


def to_kwargs(node: DictConfig) -> dict:
    """A config section as keyword arguments of the code that consumes it (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def build_mapper(cfg: DictConfig, split: str) -> Callable[[dict], dict]:
    """The ``input.<split>`` DatasetMapper (``split``: "train" or "test")."""
    from framework.data.mapper import DatasetMapper

    return DatasetMapper(**to_kwargs(cfg.input[split]))


def _has_masks(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "roi_heads", None), "mask_on", False))


def evaluate_model(cfg: DictConfig, model: torch.nn.Module, data: Datasets, output_dir: Path) -> dict:
    """COCO evaluation of ``model`` on the test split; predictions go to ``output_dir/inference``."""
    from framework.data.build import build_test_loader
    from framework.evaluation.coco_evaluation import COCOEvaluator
    from framework.evaluation.evaluator import inference_on_dataset, results_table

    tasks = ("bbox", "segm") if _has_masks(model) else ("bbox",)
    evaluator = COCOEvaluator.from_metadata(data.metadata, tasks=tasks, output_dir=str(output_dir / "inference"))
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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def _hydra_context() -> tuple[Optional[Path], list[str], bool]:
    """(output dir, task overrides, is multirun) when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, [], False
    hc = HydraConfig.get()
    from hydra.types import RunMode

    return Path(hc.runtime.output_dir), list(hc.overrides.task), hc.mode == RunMode.MULTIRUN


def _hparams(overrides: list[str]) -> dict[str, Any]:
    """The swept/overridden values of this job, as TensorBoard hparams."""
    out: dict[str, Any] = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in ("resume", "eval_only", "weights", "weights_skip_mismatch", "device"):
            continue
        try:
            out[key] = float(value) if value.lower() not in ("true", "false", "null") else value
        except ValueError:
            out[key] = value
    return out


def _setup_logging(output_dir: Path) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    fh = logging.FileHandler(output_dir / "log.txt")
    fh.setFormatter(logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s"))
    root.addHandler(fh)
    root.setLevel(logging.INFO)


def run(cfg: DictConfig, *, output_dir: Optional[Path] = None) -> Optional[float]:
    """Train and/or evaluate as the config says; return the primary final metric (for sweepers)."""
    hydra_dir, overrides, multirun = _hydra_context()
    output_dir = Path(output_dir or hydra_dir or "outputs/run")
    output_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(output_dir)
    validate_config(cfg)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
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
        _write_json(output_dir / "metrics.json", {"iteration": None, "weights": str(path), **metrics})
        _print_summary(metrics)
        return final_metric(metrics)

    from framework.engine.train_job import train

    metrics = train(cfg, model, data, output_dir, overrides=overrides, multirun=multirun, evaluate=evaluate_model)
    _print_summary(metrics)
    return final_metric(metrics)


def _flatten(results: dict) -> dict[str, float]:
    from framework.engine.hooks import flatten_results_dict

    return {k: float(v) for k, v in flatten_results_dict(results).items()}


def _print_summary(metrics: dict[str, float]) -> None:
    parts = [f"{task} AP = {metrics[f'{task}/AP']:.2f}" for task in ("bbox", "segm") if f"{task}/AP" in metrics]
    if parts:
        print("Final: " + ", ".join(parts) + " (COCO AP@[.5:.95], %)", flush=True)
