"""TorchvisionBackbone: any torchvision classification model as a multi-scale backbone for FPN."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional, Union

from torch import Tensor, nn
from torchvision.models.feature_extraction import (
    create_feature_extractor,
    get_graph_node_names,
)

from framework.errors import ConfigError, did_you_mean
from framework.layers.batch_norm import convert_frozen_batchnorm
from framework.layers.shape_spec import ShapeSpec
from framework.modeling.backbone.backbone import Backbone
from framework.registry import BACKBONES

from .classifier import build_classifier, load_classifier_weights
from .stages import (
    DRY_RUN_SIZE,
    dry_run,
    map_stride,
    modules_run_before,
    record_modules,
    stage_ends,
)

__all__ = ["TorchvisionBackbone", "feature_level"]

_LEVEL = re.compile(r"^[A-Za-z_]*?(\d+)$")


def feature_level(name: str) -> int:
    """The level of an automatic output name, whose stride is ``2**level``: "res4" / "c4" -> 4.

    Raises:
        ConfigError: ``name`` does not end in a level number.
    """
    m = _LEVEL.match(name)
    if not m:
        raise ConfigError(
            f"TorchvisionBackbone out_features has {name!r}: without return_nodes each name is a prefix and a "
            "level, the stride being 2**level (res2..res5 or c2..c5 for strides 4..32)"
        )
    return int(m.group(1))


@BACKBONES.register()
class TorchvisionBackbone(Backbone):
    """A torchvision classifier cut into feature maps with ``create_feature_extractor``.

    By default the outputs are the ends of its stride-4/8/16/32 stages, found by a dry run (see
    :mod:`.stages`): ResNet/ResNeXt ``layer1..4``, RegNet ``trunk_output.block1..4``, ConvNeXt
    ``features.1/3/5/7``, EfficientNet-B0 ``features.2/3/5/8``, MobileNetV3-Large
    ``features.3/6/12/16``. Forward: images (B, 3, H, W), normalised as the classifier was trained
    (RGB, 0-1, ImageNet mean/std: set them on the model, see the README), H and W divisible by
    :attr:`size_divisibility` -> ``{name: (B, C_name, H / stride_name, W / stride_name)}``.

    Knobs:
        model_name: a builder of ``torchvision.models`` (``list_models(module=torchvision.models)``).
        out_features: the outputs, finest first. Without ``return_nodes`` a name is a prefix and a
            level, stride ``2**level`` (``res2``..``res5`` like our ResNet, ``c2``..``c5``...).
        return_nodes: explicit nodes instead of the automatic stage ends, as torchvision's
            ``create_feature_extractor`` takes them: ``{node name: output name}``, or a list of node
            names that are their own output names. Node names are those ``get_graph_node_names``
            lists, or a module prefix such as ``layer3``; ``out_features`` picks among the outputs.
        weights_path: a local ``state_dict`` file of that torchvision model, loaded before the model
            is cut (None: random initialisation). Nothing is ever downloaded.
        norm: what the classifier's BatchNorm2d layers become: "FrozenBN" (fixed statistics and
            affine, as torchvision's detection backbones), "BN" (trained) or "SyncBN". Models
            without BatchNorm (ConvNeXt's LayerNorm) are unaffected.
        freeze_at: freeze every layer that runs up to the end of the last stage of stride
            ``<= 2**freeze_at`` (1: the stride-2 stem, 2: stem + res2, ...; 0: nothing). Frozen
            layers get ``requires_grad=False`` and their BatchNorms become FrozenBatchNorm2d.
        builder_kwargs: extra arguments of the builder (e.g. ``{stochastic_depth_prob: 0.0}``).
    """

    def __init__(
        self,
        *,
        model_name: str = "resnet50",
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        return_nodes: Union[dict[str, str], Sequence[str], None] = None,
        weights_path: Optional[str] = None,
        norm: Literal["FrozenBN", "BN", "SyncBN"] = "FrozenBN",
        freeze_at: int = 2,
        builder_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        out_features = list(out_features)
        if not out_features or len(set(out_features)) != len(out_features):
            raise ConfigError(f"TorchvisionBackbone out_features={out_features} must be non-empty and distinct")
        if norm not in ("FrozenBN", "BN", "SyncBN"):
            raise ConfigError(f"TorchvisionBackbone norm={norm!r}; valid: 'FrozenBN', 'BN', 'SyncBN'")
        classifier = build_classifier(model_name, builder_kwargs)
        if weights_path:
            load_classifier_weights(classifier, weights_path, model_name=model_name)
        records = record_modules(classifier)

        if return_nodes is None:
            levels = {name: feature_level(name) for name in out_features}
            ends = stage_ends(records, [2**lvl for lvl in levels.values()], model_name=model_name)
            nodes = {ends[2**levels[name]]: name for name in out_features}
        else:
            nodes = _select_return_nodes(_as_mapping(return_nodes), out_features)
        self.return_nodes = nodes  # torchvision node -> output name: where the classifier was cut
        self.body = _extract(classifier, nodes, model_name)

        shapes = _output_shapes(self.body, model_name, nodes)
        self._out_features = out_features
        self._out_feature_strides = {name: shapes[name].stride for name in out_features}
        self._out_feature_channels = {name: shapes[name].channels for name in out_features}
        self._size_divisibility = max(self._out_feature_strides.values())

        top_level = max(s.bit_length() - 1 for s in self._out_feature_strides.values())
        if not 0 <= freeze_at <= top_level:
            raise ConfigError(
                f"TorchvisionBackbone freeze_at={freeze_at} is out of range: 0 (train all) to {top_level} "
                f"(everything up to the coarsest output, stride {2**top_level})"
            )
        frozen = modules_run_before(records, 2**freeze_at) if freeze_at > 0 else set()
        _freeze_and_convert_norms(self.body, frozen, norm)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Args:
            x: images (B, 3, H, W), H and W divisible by :attr:`size_divisibility`.

        Returns:
            name -> (B, C, H / stride, W / stride) for each name of ``out_features``.
        """
        if x.dim() != 4:
            raise ValueError(f"TorchvisionBackbone takes (B, C, H, W) images, got a tensor of shape {tuple(x.shape)}")
        features = self.body(x)
        return {name: features[name] for name in self._out_features}


def _as_mapping(return_nodes: Any) -> dict[str, str]:
    """torchvision's two forms of ``return_nodes`` (a mapping, or a list of names) as a mapping."""
    if isinstance(return_nodes, Mapping):
        pairs = list(return_nodes.items())
    elif isinstance(return_nodes, Sequence) and not isinstance(return_nodes, str):
        pairs = [(n, n) for n in return_nodes]
    else:
        pairs = [(return_nodes, None)]
    if not pairs or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise ConfigError(
            f"TorchvisionBackbone return_nodes={return_nodes!r} must be a non-empty {{node name: output name}} "
            "mapping or list of node names, e.g. {layer2: res3, layer3: res4, layer4: res5}"
        )
    return dict(pairs)


def _select_return_nodes(return_nodes: dict[str, str], out_features: list[str]) -> dict[str, str]:
    """The entries of ``return_nodes`` whose output name is in ``out_features``, in that order."""
    by_name = {v: k for k, v in return_nodes.items()}
    if len(by_name) != len(return_nodes):
        raise ConfigError(f"TorchvisionBackbone return_nodes={return_nodes} gives two nodes the same output name")
    unknown = [f for f in out_features if f not in by_name]
    if unknown:
        raise ConfigError(
            f"TorchvisionBackbone out_features has {unknown}, which return_nodes does not produce"
            f"{did_you_mean(unknown[0], by_name)}; its output names are {list(by_name)} (set out_features to them)"
        )
    return {by_name[f]: f for f in out_features}


def _extract(classifier: nn.Module, nodes: dict[str, str], model_name: str) -> nn.Module:
    """``create_feature_extractor`` (train and eval graphs), unknown nodes reported with close names."""
    try:
        return create_feature_extractor(classifier, return_nodes=nodes, suppress_diff_warning=True)
    except ValueError as e:
        if "is not present in model" not in str(e):
            raise
        available = get_graph_node_names(classifier, suppress_diff_warning=True)[1]
        prefixes = {".".join(n.split(".")[: i + 1]) for n in available for i in range(n.count(".") + 1)}
        bad = [q for q in nodes if not any(re.match(rf"^{re.escape(q)}(\.|$)", n) for n in available)]
        raise ConfigError(
            f"TorchvisionBackbone return_nodes: {bad} not nodes of torchvision's {model_name!r}."
            f"{did_you_mean(bad[0], prefixes) if bad else ''} List them with torchvision.models.feature_extraction."
            f"get_graph_node_names(torchvision.models.{model_name}())[1] (a module prefix such as 'layer3' also works)"
        ) from e


def _output_shapes(body: nn.Module, model_name: str, nodes: dict[str, str]) -> dict[str, ShapeSpec]:
    """Channels and stride of every output of ``body``, from a dry run."""
    outputs = dry_run(body)
    node_of = {v: k for k, v in nodes.items()}
    shapes = {}
    for name, value in outputs.items():
        shape = tuple(value.shape) if isinstance(value, Tensor) else ()
        stride = map_stride(shape, DRY_RUN_SIZE)
        if stride is None:
            raise ConfigError(
                f"TorchvisionBackbone {model_name!r}: node {node_of[name]!r} ({name}) gives a {shape} output for a "
                f"(1, 3, {DRY_RUN_SIZE[0]}, {DRY_RUN_SIZE[1]}) image, not a (B, C, H / stride, W / stride) "
                "feature map (channels-last models such as Swin, or a node after global pooling); choose another node"
            )
        shapes[name] = ShapeSpec(channels=int(shape[1]), stride=stride)
    return shapes


def _freeze_and_convert_norms(body: nn.Module, frozen: set[str], norm: str) -> None:
    """Freeze the modules named in ``frozen``; turn BatchNorm2d layers into ``norm`` (frozen ones: FrozenBN).

    Done on the extracted graph module, whose submodules keep the classifier's names: tracing
    FrozenBatchNorm2d itself would fail on its ``requires_grad`` branch.
    """
    for name, module in body.named_modules():
        if name in frozen:
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
    for name, module in list(body.named_modules()):
        if isinstance(module, nn.BatchNorm2d) and (norm == "FrozenBN" or name in frozen):
            parent, _, child = name.rpartition(".")
            body.get_submodule(parent).add_module(child, convert_frozen_batchnorm(module))
    if norm == "SyncBN":
        nn.SyncBatchNorm.convert_sync_batchnorm(body)
