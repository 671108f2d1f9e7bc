"""An :class:`ExportablePredictor` from a config and a weights file (a run directory or a composed config)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from framework.errors import ConfigError, ExportError
from framework.export.module import ExportablePredictor
from framework.export.paste import GRAPH_MASK_PASTERS

__all__ = ["build_exportable", "export_config", "exported_resize"]

logger = logging.getLogger(__name__)


def export_config(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` as it is exported: float32 and eager (``model.inference_amp=none``,
    ``model.torch_compile=[]``): a graph carries its own dtype, and its runtime compiles it."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in (("model.inference_amp", "none"), ("model.torch_compile", [])):
        current = OmegaConf.select(cfg, key, default=None)
        if current not in (None, value):
            logger.info(f"Exporting with {key}={value} (the config has {current})")
            OmegaConf.update(cfg, key, value, merge=False)
    return cfg


#: The test-time augmentations written as graph operations (framework/export/resize.py), by
#: registered name: exact classes, since a subclass may resize differently.
_RESIZE_STYLES = {"ResizeShortestEdge": "detectron2", "ResizeShortestEdgeTorchvision": "torchvision"}


def exported_resize(cfg: DictConfig) -> tuple[int, int, str]:
    """The config's test-time pipeline (``input.test.augmentations``) as the exported graph runs
    it: ``(short_edge, max_size, resize_style)``; no augmentation is ``short_edge=0`` (no resize).

    Raises:
        ExportError: an augmentation other than one deterministic shortest-edge resize, naming its
            config path and class.
        ConfigError: a resize that draws among several sizes (a graph has one pipeline).
    """
    from framework.data import augmentations as augmentations_package  # registers the built-in ones
    from framework.registry import AUGMENTATIONS

    del augmentations_package
    specs = list(cfg.input.test.augmentations)
    built = [AUGMENTATIONS.build(spec, path=f"input.test.augmentations.{i}") for i, spec in enumerate(specs)]
    if not built:
        return 0, 1, "detectron2"
    names = [type(a).__name__ for a in built]
    for i, name in enumerate(names):
        if name not in _RESIZE_STYLES or i > 0:
            raise ExportError(f"config path 'input.test.augmentations.{i}' ({name}) does not export: the graph's "
                              f"test-time pipeline is one of {', '.join(_RESIZE_STYLES)} or nothing "
                              f"(framework/export/resize.py); the config has {names}")
    (aug,) = built
    if len(aug.short_edge_length) != 1:
        raise ConfigError(f"config path 'input.test.augmentations.0.short_edge_length' must hold one test size to "
                          f"export, got {list(aug.short_edge_length)}")
    return int(aug.short_edge_length[0]), int(aug.max_size), _RESIZE_STYLES[type(aug).__name__]


def build_exportable(cfg: DictConfig, weights: Path) -> ExportablePredictor:
    """The detector of ``cfg`` (see :func:`export_config`) with ``weights`` loaded, on the CPU,
    wrapped with the test-time input pipeline of ``cfg.input.test``.

    Raises:
        ExportError: a config whose inference cannot be written as a graph (``model.test_resize``,
            a ``model.mask_paste`` rule without a graph version), naming the key.
        ConfigError: an invalid config.
    """
    from framework.checkpoint import Checkpointer
    from framework.config.compose import setup, validate_config
    from framework.engine.builders import build_model

    setup()
    validate_config(cfg)
    if OmegaConf.select(cfg, "model.test_resize", default=None) is not None:
        raise ExportError("config key 'model.test_resize' (torchvision's in-model resize) does not export: its "
                          "output size is read as Python numbers; resize in the mapper instead "
                          "(input.test.augmentations=[{name: ResizeShortestEdgeTorchvision, ...}])")
    test = cfg.input.test
    short_edge, max_size, resize_style = exported_resize(cfg)
    model_format = OmegaConf.select(cfg, "model.input_format", default=None)
    if model_format is not None and model_format != test.image_format:
        raise ConfigError(f"config path 'input.test.image_format' is {test.image_format!r} but model.input_format is "
                          f"{model_format!r}; set input.test.image_format={model_format}")
    model = build_model(cfg, torch.device("cpu"))
    Checkpointer(model).load(str(weights), checkpointables=[])
    fields = getattr(model, "output_fields", None) or ()
    mask_paste = getattr(model, "mask_paste", "detectron2")
    mask_on = "pred_masks" in fields
    if mask_on and mask_paste not in GRAPH_MASK_PASTERS:
        raise ExportError(f"config key 'model.mask_paste'={mask_paste!r} does not export: the pasting rules written "
                          f"as graph operations (framework/export/paste.py) are {', '.join(GRAPH_MASK_PASTERS)}")
    return ExportablePredictor(model=model.eval(), short_edge=short_edge, max_size=max_size,
                               resize_style=resize_style, mask_on=mask_on, mask_paste=mask_paste)
