"""Predictor: a trained model on images from a notebook or a script, as the run's evaluation sees them.

Example::

    predictor = Predictor.from_run("outputs/2024-05-01/12-00-00")
    instances = predictor("photo.jpg")          # or a PIL image, or an (H, W, 3) uint8 RGB array
    names = [predictor.class_names[k] for k in instances.pred_classes.tolist()]

Every input goes through the run's test-time ``DatasetMapper`` (``input.test``: resize, channel
order), so a file gives exactly the detections the evaluator computed for it.

The same model exported by tools/export_model.py runs behind the same API::

    predictor = Predictor.from_run(run_dir, backend="onnxruntime")   # RUN_DIR/export/model.onnx
    predictor = Predictor.from_export("deploy/", backend="torch_export")

(the exported graph holds the resize and the post-processing; docs/deployment.md).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps
from torch import nn

from framework.data.catalog import Metadata
from framework.engine.exported_model import BACKENDS, ExportedModel
from framework.errors import ConfigError, did_you_mean
from framework.structures import Boxes, Instances

__all__ = ["Predictor", "ImageInput", "find_checkpoint", "load_run_config", "resolve_metadata"]

logger = logging.getLogger(__name__)

#: One image for :class:`Predictor`: a file path, a PIL image, or an (H, W, 3) uint8 RGB array.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]

#: Files of a run directory that :func:`find_checkpoint` looks for.
BEST_CHECKPOINT, FINAL_CHECKPOINT, LAST_POINTER = "model_best.pth", "model_final.pth", "last_checkpoint"


def load_run_config(run_dir: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved ``config.yaml`` of a run directory, with ``key=value`` overrides applied.

    A run's config is already composed and resolved, so an override can only change a key it has
    (e.g. ``model.roi_heads.box_predictor.test_score_thresh=0.3``,
    ``input.test.augmentations.0.short_edge_length=[320]``); a config group choice (``model=...``)
    needs a new composition (:meth:`Predictor.from_config`).

    Raises:
        FileNotFoundError: no such folder, or no ``config.yaml`` in it.
        ConfigError: an override names an unknown key, is a group choice, a sweep or a deletion.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} not found (expected a folder written by tools/train_net.py, "
                                f"holding config.yaml and model_final.pth)")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: {run_dir} is not a run directory (tools/train_net.py writes "
                                f"the resolved config there); use Predictor.from_config(overrides, weights=...) instead")
    cfg = OmegaConf.load(config_file)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{config_file}: expected a mapping at the top level, got a list")
    _apply_overrides(cfg, overrides, source=str(config_file))
    return cfg


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str], *, source: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    from framework.config.compose import unknown_key_hint

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse overrides {list(overrides)} of {source} (each must be key=value, "
                          f"e.g. model.roi_heads.box_predictor.test_score_thresh=0.3): {e}") from None
    missing = object()
    for o in parsed:
        key = o.key_or_group
        where = f"override {o.input_line!r} of {source}"
        if o.is_sweep_override() or o.type != OverrideType.CHANGE or o.package is not None:
            raise ConfigError(f"{where}: only plain key=value changes apply to a run's config (no sweeps, +, ~ or @)")
        current = missing if "/" in key else OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
        if current is missing:
            raise ConfigError(f"{where}: no key {key!r} in the config.{unknown_key_hint(cfg, key)}")
        value = o.value()
        if isinstance(current, DictConfig) and not isinstance(value, dict):
            raise ConfigError(f"{where}: {key!r} is a config section, so {key}={value} reads as a config group choice; "
                              "a run's config.yaml is resolved and only its keys can be set. To choose config groups, "
                              "compose a new config: Predictor.from_config(overrides, weights=...)")
        OmegaConf.update(cfg, key, value, merge=False)


def find_checkpoint(run_dir: Union[str, os.PathLike], checkpoint: Union[str, os.PathLike] = "best") -> Path:
    """The weights file of a run directory.

    Args:
        checkpoint: ``"best"``: ``model_best.pth`` if the run wrote one, else as ``"last"``;
            ``"last"``: the file ``last_checkpoint`` points to, else ``model_final.pth``;
            anything else: a path, as given or relative to ``run_dir``.

    Raises:
        FileNotFoundError: naming the files that were looked for.
    """
    run_dir = Path(run_dir).expanduser()
    if checkpoint not in ("best", "last"):
        candidates = [Path(checkpoint).expanduser(), run_dir / checkpoint]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"checkpoint {checkpoint!r} not found (looked for {candidates[0]} and {candidates[1]}); "
                                    f"use checkpoint='best', 'last' or the path of a .pth/.pkl file")
        return found
    if checkpoint == "best" and (run_dir / BEST_CHECKPOINT).is_file():
        return run_dir / BEST_CHECKPOINT
    pointer = run_dir / LAST_POINTER
    if pointer.is_file():
        target = run_dir / pointer.read_text().strip()
        if not target.is_file():
            raise FileNotFoundError(f"{pointer} points to {target.name}, which does not exist in {run_dir}; "
                                    f"use checkpoint='best' or the path of an existing .pth file")
        return target
    if (run_dir / FINAL_CHECKPOINT).is_file():
        return run_dir / FINAL_CHECKPOINT
    looked = [BEST_CHECKPOINT] if checkpoint == "best" else []
    raise FileNotFoundError(f"no checkpoint in {run_dir}: expected one of {looked + [LAST_POINTER, FINAL_CHECKPOINT]} "
                            "(is the run still training, or did it stop before saving?)")


def resolve_metadata(cfg: DictConfig) -> Metadata:
    """The metadata (class names, colours, category ids) of the config's test dataset.

    Falls back, with a warning, to classes named ``"class 0"``, ``"class 1"``, ... when the dataset
    cannot be resolved (e.g. its json is not on this machine) or has another number of classes
    than the model.
    """
    from framework.data import get_metadata
    from framework.data.coco import DatasetError
    from framework.engine.builders import register_split

    num_classes = OmegaConf.select(cfg, "model.roi_heads.num_classes", default=None)
    split = OmegaConf.select(cfg, "dataset.test", default=None)
    name = split.get("name") if isinstance(split, DictConfig) else None
    try:
        if name is None:
            raise ConfigError("the config has no dataset.test.name")
        metadata = get_metadata(register_split(split, "dataset.test"))
    except (ConfigError, DatasetError, OSError) as e:
        reason = str(e)
    else:
        if num_classes is None or metadata.num_classes == int(num_classes):
            return metadata
        reason = f"it has {metadata.num_classes} classes but the model predicts {num_classes}"
    if num_classes is None:
        raise ConfigError(f"cannot name the classes: dataset {name!r} is unavailable ({reason}) and the config has no "
                          "model.roi_heads.num_classes")
    logger.warning(f"Class names of dataset {name!r} unavailable ({reason}); "
                   f"using 'class 0' .. 'class {int(num_classes) - 1}'")
    return Metadata(name=str(name or "unknown"), thing_classes=[f"class {i}" for i in range(int(num_classes))])


class Predictor:
    """A model in eval mode plus the test-time input pipeline of its config; call it on images.

    Args:
        model: the detector (any device); it is put in eval mode. With an exported ``backend``, the
            :class:`~framework.engine.exported_model.ExportedModel` that runs it.
        cfg: the full config the model was built from (a run's ``config.yaml``): ``input.test``
            gives the mapper, ``dataset.test`` the class names.
        weights: the file the weights came from (shown by ``repr``).
        backend: ``"eager"`` (the model in Python), ``"onnxruntime"`` (the ``model.onnx`` of an
            export, run by onnxruntime) or ``"torch_export"`` (its ``model.pt2``). An exported
            model resizes and post-processes inside its graph: the same detections as eager to
            float rounding (docs/deployment.md gives the measured differences); it takes one
            image per call, so ``batch_size`` only groups the calls.

    Call: ``predictor(image, *, batch_size=1)`` with one :data:`ImageInput` returns one
    :class:`Instances`; with a list of them, a list. Each ``Instances`` is on the CPU, has the
    ORIGINAL image size and the fields ``pred_boxes`` (Boxes (R, 4), XYXY pixels), ``scores``
    (R,), ``pred_classes`` (R,) int64 contiguous ids into :attr:`class_names` and, with a mask
    head, ``pred_masks`` (R, H, W) bool.
    """

    def __init__(self, *, model: Union[nn.Module, ExportedModel], cfg: DictConfig, weights: str | None = None,
                 backend: str = "eager") -> None:
        from framework.engine.builders import build_mapper
        from framework.utils.onednn import enlarge_primitive_cache

        enlarge_primitive_cache()  # takes effect when this comes before the process's first convolution
        if backend not in BACKENDS:
            raise ValueError(f"Predictor backend must be one of {list(BACKENDS)}, got {backend!r}.{did_you_mean(str(backend), BACKENDS)}")
        exported = isinstance(model, ExportedModel)
        if exported != (backend != "eager") or (exported and model.backend != backend):
            got = f"an ExportedModel for {model.backend!r}" if exported else type(model).__name__
            raise ValueError(f"Predictor(backend={backend!r}) got {got}: backend='eager' takes the nn.Module, an "
                             f"exported backend the ExportedModel (Predictor.from_export(folder, backend=...))")
        self.cfg = cfg
        self.backend = backend
        self.model = model if exported else model.eval()
        self.mapper = build_mapper(cfg, "test")
        self.weights = weights
        if exported:
            return
        model_format = getattr(model, "input_format", None)
        if model_format is not None and model_format != self.mapper.image_format:
            raise ConfigError(f"config path 'input.test.image_format' is {self.mapper.image_format!r} but the model's "
                              f"input_format is {model_format!r}; set input.test.image_format={model_format}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls,
        run_dir: Union[str, os.PathLike],
        *,
        checkpoint: Union[str, os.PathLike] = "best",
        device: str = "auto",
        overrides: Sequence[str] = (),
        backend: str = "eager",
    ) -> "Predictor":
        """The model of a run directory written by tools/train_net.py.

        Args:
            run_dir: holds ``config.yaml`` (see :func:`load_run_config`) and checkpoints.
            checkpoint: ``"best"``, ``"last"`` or a path (see :func:`find_checkpoint`).
            device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
            overrides: ``key=value`` changes of the run's config.
            backend: ``"eager"``, or ``"onnxruntime"`` / ``"torch_export"`` for the export that
                ``tools/export_model.py RUN_DIR`` wrote into ``RUN_DIR/export`` (checkpoint and
                overrides were chosen at export time: :meth:`from_export` for another folder).
        """
        if backend != "eager":
            if overrides or checkpoint != "best":
                raise ConfigError(f"Predictor.from_run(backend={backend!r}): the exported graph was built with its "
                                  "checkpoint and overrides; pass them to tools/export_model.py instead")
            if not Path(run_dir).expanduser().is_dir():
                load_run_config(run_dir)  # raises the run directory's FileNotFoundError
            return cls.from_export(Path(run_dir).expanduser() / "export", backend=backend)
        cfg = load_run_config(run_dir, overrides)
        return cls._load(cfg, find_checkpoint(run_dir, checkpoint), device)

    @classmethod
    def from_export(cls, folder: Union[str, os.PathLike], *, backend: str = "onnxruntime") -> "Predictor":
        """The model that tools/export_model.py wrote into ``folder``, run by ``backend``
        (``"onnxruntime"``: ``model.onnx``, ``"torch_export"``: ``model.pt2``) on the CPU.

        Raises:
            FileNotFoundError: no export in ``folder``, or none for this backend (naming the command).
        """
        if backend not in BACKENDS or backend == "eager":
            valid = [b for b in BACKENDS if b != "eager"]
            raise ValueError(f"Predictor.from_export backend must be one of {valid}, got {backend!r}")
        model = ExportedModel(folder, backend=backend)
        return cls(model=model, cfg=OmegaConf.create(model.config), weights=str(model.path), backend=backend)

    @classmethod
    def from_config(
        cls, overrides: Sequence[str] = (), weights: str | os.PathLike | None = None, *, device: str = "auto"
    ) -> "Predictor":
        """A model built from ``configs/train.yaml`` composed with Hydra ``overrides``, loaded from ``weights``.

        ``weights`` defaults to the config's ``weights`` key (``overrides=["weights=..."]``).
        """
        from framework.config.compose import compose

        cfg = compose(overrides)
        weights = weights if weights is not None else cfg.get("weights")
        if not weights:
            raise ConfigError("Predictor.from_config needs weights=<checkpoint file> (a .pth of a run, or a model-zoo .pkl)")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} not found (Predictor.from_config weights={str(weights)!r}); "
                                    f"expected a .pth of a run or a model-zoo .pkl")
        return cls._load(cfg, path, device)

    @classmethod
    def _load(cls, cfg: DictConfig, weights: Path, device: str) -> "Predictor":
        from framework.checkpoint import Checkpointer
        from framework.config.compose import setup, validate_config
        from framework.engine.builders import resolve_device, build_model

        setup()
        validate_config(cfg)
        model = build_model(cfg, resolve_device(device))
        Checkpointer(model).load(str(weights), checkpointables=[])
        return cls(model=model, cfg=cfg, weights=str(weights))

    def __repr__(self) -> str:
        if self.backend != "eager":
            return f"Predictor({self.model!r})"
        return f"Predictor({type(self.model).__name__}, weights={self.weights!r}, {self.mapper!r})"

    # ------------------------------------------------------------------ metadata
    @cached_property
    def metadata(self) -> Metadata:
        """Metadata of the config's test dataset (see :func:`resolve_metadata`; resolved on first use,
        since a built-in dataset may be generated for it; an export's are in its metadata.json)."""
        if isinstance(self.model, ExportedModel):
            return self.model.metadata
        return resolve_metadata(self.cfg)

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by ``pred_classes``."""
        return list(self.metadata.thing_classes)

    # ------------------------------------------------------------------ inference
    def __call__(
        self, images: Union[ImageInput, Sequence[ImageInput]], *, batch_size: int = 1
    ) -> Union[Instances, list[Instances]]:
        """Detections of one image (-> Instances) or of a list of images (-> list, same order).

        Args:
            batch_size: images per forward pass. In a batch, images are padded to the largest
                one, so images of different sizes can get (slightly) different detections than
                alone, as in detectron2.
        """
        from framework.evaluation.evaluator import inference_context

        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Predictor(...)(images, batch_size=...): batch_size must be a positive int (images "
                             f"per forward pass), got {batch_size!r} ({type(batch_size).__name__})")
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        results: list[Instances] = []
        if isinstance(self.model, ExportedModel):
            results = [self._run_exported(_as_dataset_dict(x, i, len(items))) for i, x in enumerate(items)]
            return results[0] if single else results
        with inference_context(self.model), torch.inference_mode():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                batch = [self.mapper(_as_dataset_dict(x, start + i, len(items))) for i, x in enumerate(chunk)]
                results += [out["instances"].to("cpu") for out in self.model(batch)]
        return results[0] if single else results


    def _run_exported(self, dataset_dict: dict[str, Any]) -> Instances:
        """Detections of the exported model on one image, decoded as the mapper decodes it."""
        from framework.data.detection_utils import read_image

        rgb = read_image(dataset_dict["file_name"], "RGB").permute(1, 2, 0).numpy()  # (H, W, 3) uint8
        out = self.model(rgb)
        instances = Instances((rgb.shape[0], rgb.shape[1]))
        instances.pred_boxes = Boxes(out["boxes"])
        instances.scores = out["scores"]
        instances.pred_classes = out["classes"]
        if "masks" in out:
            instances.pred_masks = out["masks"].bool()
        return instances


def _as_dataset_dict(image: Any, index: int, total: int) -> dict[str, Any]:
    """A dataset dict that the mapper reads ``image`` from.

    The mapper decodes ``file_name`` itself; an in-memory image is handed over as an uncompressed
    (lossless) PPM in memory, so that every mapper setting applies to it exactly as to a file.
    """
    where = f"image {index} of {total}" if total > 1 else "image"
    if isinstance(image, (str, os.PathLike)):
        return {"file_name": os.fspath(image)}
    if isinstance(image, Image.Image):
        pil = ImageOps.exif_transpose(image).convert("RGB")  # as read_image treats files
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            hint = " (channels first? use array.transpose(1, 2, 0))" if image.ndim == 3 and image.shape[0] == 3 else ""
            hint = hint or (" (grayscale? use np.stack([a, a, a], axis=-1))" if image.ndim == 2 else "")
            hint = hint or (" (RGBA? use array[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else "")
            raise ValueError(f"{where}: expected an (H, W, 3) RGB array, got shape {tuple(image.shape)}{hint}")
        if image.dtype != np.uint8:
            raise TypeError(f"{where}: expected a uint8 array (0-255), got {image.dtype}; for floats in [0, 1] "
                            "pass (array * 255).round().astype(np.uint8)")
        pil = Image.fromarray(np.ascontiguousarray(image))
    else:
        hint = "; for a (3, H, W) tensor pass tensor.permute(1, 2, 0).numpy()" if isinstance(image, torch.Tensor) else ""
        raise TypeError(f"{where}: expected a file path, a PIL image or an (H, W, 3) uint8 numpy array, "
                        f"got {type(image).__name__}{hint}")
    buffer = io.BytesIO()
    pil.save(buffer, format="PPM")
    buffer.seek(0)
    return {"file_name": buffer}
