"""Objects of a run built from its config: device, datasets, model, mappers; and the run directory's
small files. Shared by the main job (:mod:`framework.engine.run`, :mod:`framework.engine.train_job`),
the :class:`~framework.engine.predictor.Predictor` and the tools, none of which import each other
for them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from framework.errors import ConfigError

__all__ = [
    "Datasets",
    "resolve_device",
    "register_split",
    "build_datasets",
    "bad_data_policy",
    "check_dataset_images",
    "build_model",
    "to_kwargs",
    "build_mapper",
    "build_evaluator",
    "build_loggers",
    "write_json",
    "hparams_from_overrides",
]

logger = logging.getLogger("framework")


@dataclass
class Datasets:
    """The resolved training and test data of a run."""

    train: list[dict]
    test: list[dict]
    metadata: Any  # framework.data.catalog.Metadata of the test set
    train_name: str  # "" when the run needs no training data (eval_only)
    test_name: str


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... as a torch.device.

    In a process group of several ranks, ``"cuda"`` (or ``"auto"`` with CUDA) is this rank's
    device, ``cuda:<LOCAL_RANK>``.
    """
    from framework.utils import comm

    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config path 'device': {device!r} requested but CUDA is not available; use device=cpu or auto")
    if dev.type == "cuda" and dev.index is None and comm.get_world_size() > 1:
        dev = torch.device("cuda", comm.get_local_rank())
    return dev


def register_split(split: DictConfig, path: str, *, strict: bool = False, keep_empty: bool = False) -> str:
    """Register a ``{name, json, image_root}`` split from the config if it names files; return its name.

    ``strict``: a bad image or annotation in the json is an error (else it is dropped and counted).
    ``keep_empty``: keep images without annotations (a test split: detections on them are false
    positives, as in COCO's own evaluation).
    """
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
    register_coco_instances(name, json_file=str(json_file), image_root=str(image_root), strict=strict,
                            keep_empty=keep_empty)
    return name


def build_datasets(cfg: DictConfig, *, need_train: bool = True) -> Datasets:
    """Register the config's datasets if they are given as files, load them, and check the classes."""
    from framework.data import get_dataset, get_metadata

    # eval_only runs need no training split: it is not even registered (its files may not exist).
    strict = bad_data_policy(cfg) == "strict"
    train_name = register_split(cfg.dataset.train, "dataset.train", strict=strict) if need_train else ""
    test_name = register_split(cfg.dataset.test, "dataset.test", strict=strict, keep_empty=True)
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
    data = Datasets(train=train, test=get_dataset(test_name), metadata=metadata, train_name=train_name,
                    test_name=test_name)
    if strict:
        check_dataset_images(data)
    return data


def bad_data_policy(cfg: DictConfig) -> str:
    """``cfg.bad_data``, checked: ``"skip"`` or ``"strict"``."""
    policy = str(cfg.bad_data)
    if policy not in ("skip", "strict"):
        from framework.errors import did_you_mean

        raise ConfigError(f"config path 'bad_data': {policy!r} is not one of ['skip', 'strict'].{did_you_mean(policy, ['skip', 'strict'])}")
    return policy


def check_dataset_images(data: Datasets) -> None:
    """Decode every image of the run once (a progress bar on a terminal) and compare its size with
    its dataset dict: under ``bad_data=strict`` a bad image fails here, before training, not at the
    iteration that first reads it."""
    from framework.data.coco import DatasetError, check_images, format_problem_list

    failures = []
    for dicts, name in ((data.train, data.train_name), (data.test, data.test_name)):
        if dicts:
            logger.info(f"bad_data=strict: decoding the {len(dicts)} images of {name!r} once")
            failures += [f"{name}: {f}" for f in check_images(dicts, decode=True, raise_error=False,
                                                             progress=f"checking {name}")]
    if failures:
        raise DatasetError(f"bad_data=strict: {len(failures)} image(s) cannot be used (nothing was trained):\n"
                           f"{format_problem_list(failures)}\n"
                           "Fix or remove them, or set bad_data=skip to train without them (each is then replaced "
                           "and counted).", failures)


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


def build_evaluator(cfg: DictConfig, metadata: Any, output_dir: Path, dataset_dicts: Any = None) -> Any:
    """The run's ``evaluators`` (a dict of EVALUATORS components) as one evaluator over the test set
    described by ``metadata``; each entry takes what it needs of ``metadata``, ``dataset_name``,
    ``gt_json``, ``dataset_dicts``, ``dataset_id_to_contiguous_id``, ``class_names`` and ``output_dir``.

    Given the test set's ``dataset_dicts`` (as loaded and validated), ``gt_json`` is the ground
    truth they kept (:func:`framework.data.coco.coco_ground_truth`) rather than the raw file, so
    that nothing the loader dropped can reach COCOeval.
    """
    from framework.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators
    from framework.registry import EVALUATORS

    gt_json: Any = metadata.json_file
    if dataset_dicts is not None and gt_json is not None:
        from framework.data.coco import coco_ground_truth

        gt_json = coco_ground_truth(dataset_dicts, gt_json)
    offered = {
        "metadata": metadata,
        "dataset_name": metadata.name,
        "dataset_dicts": dataset_dicts,
        "gt_json": gt_json,
        "dataset_id_to_contiguous_id": metadata.thing_dataset_id_to_contiguous_id,
        "class_names": list(metadata.thing_classes),
        "output_dir": str(output_dir),
    }
    built = EVALUATORS.build_dict(cfg.get("evaluators"), path="evaluators", offered=offered)
    for key, evaluator in built.items():
        if not isinstance(evaluator, DatasetEvaluator):
            raise ConfigError(f"config path 'evaluators.{key}': expected a DatasetEvaluator, got {type(evaluator).__name__}")
    return DatasetEvaluators(built.values())


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Any]:
    """The run's ``loggers`` (a dict of LOGGERS components), each offered ``output_dir`` and ``max_iter``."""
    from framework.registry import LOGGERS
    from framework.utils.writers import EventWriter

    offered = {"output_dir": str(output_dir), "max_iter": int(cfg.train.max_iter)}
    built = LOGGERS.build_dict(cfg.get("loggers"), path="loggers", offered=offered)
    for key, writer in built.items():
        if not isinstance(writer, EventWriter):
            raise ConfigError(f"config path 'loggers.{key}': expected an EventWriter, got {type(writer).__name__}")
    return list(built.values())


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def hparams_from_overrides(overrides: list[str]) -> dict[str, Any]:
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
