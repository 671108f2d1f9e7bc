"""Every option of every model config group, on every model preset: composes, builds, and keeps its
own defaults (a preset's values for one component never leak onto another one chosen instead)."""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from framework.config.compose import CONFIG_DIR, compose, setup
from framework.config.groups import iter_groups
from framework.errors import ConfigError
from framework.registry import META_ARCHITECTURES, knobs

PRESETS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
#: Knobs that change a preset's size but not which components meet which inputs: two presets that
#: differ only in these get the same options, so the option x preset product runs one of them.
SIZE_ONLY_KNOBS = ("backbone.bottom_up.depth",)


def _group_options() -> list[tuple[str, str]]:
    """(group, option) for every option Hydra sees in the groups below ``model`` (YAML and schemas)."""
    setup()  # collection runs before the session fixture that registers the components
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = [g for g, _ in iter_groups() if g.startswith("model/")] + ["model/roi_pooler"]
        return [(g, o) for g in sorted(set(groups)) for o in loader.get_group_options(g)]


OPTIONS = _group_options()

# Choices that cannot work on these presets and fail with a ConfigError: a backbone whose outputs
# are not the features the RPN and RoI heads read (a plain ResNet gives res2..res5, not p2..p6), an
# FPN as the bottom-up of an FPN (no group nests that deep).
INCOMPATIBLE = {("model/backbone", "ResNet"), ("model/backbone/bottom_up", "FPN")}
#: What the RoI heads say when a mask head that reads the feature maps is chosen with a mask pooler.
FEATURE_MAP_HEAD_HINT = "set model.roi_heads.mask_pooler=null"


def _incompatible(group: str, option: str, error: ConfigError) -> bool:
    """A listed choice, or any bare bottom-up backbone (a plugin's too) chosen as the whole backbone."""
    bare_bottom_up = group == "model/backbone" and "is not an available feature" in str(error)
    return (group, option) in INCOMPATIBLE or bare_bottom_up


def _node(cfg, group: str):
    """The config node of a group path (``model/rpn/head`` -> ``cfg.model.rpn.head``), None if absent."""
    node = cfg
    for part in group.split("/"):
        node = node.get(part) if node is not None else None
    return node


def _structures(presets: list[str]) -> list[str]:
    """``presets`` less those equal to an earlier one up to :data:`SIZE_ONLY_KNOBS` (R101 ~ R50)."""
    setup()
    seen, kept = [], []
    for preset in presets:
        model = OmegaConf.to_container(compose([f"model={preset}"]).model, resolve=True)
        for dotted in SIZE_ONLY_KNOBS:
            parent, _, leaf = dotted.rpartition(".")
            (_node(model, parent.replace(".", "/")) or {}).pop(leaf, None)
        if model not in seen:
            seen.append(model)
            kept.append(preset)
    return kept


STRUCTURES = _structures(PRESETS)


def test_presets_of_one_structure_differ_only_in_size():
    assert ("mask_rcnn_R_50_FPN" in STRUCTURES) != ("mask_rcnn_R_101_FPN" in STRUCTURES)
    assert "faster_rcnn_R_50_FPN" in STRUCTURES and "mask_rcnn_R_50_FPN_torchvision" in STRUCTURES
    assert "mask_rcnn_R_18_FPN_quick" in STRUCTURES  # other channel widths: its own structure


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_builds(preset):
    with torch.device("meta"):
        META_ARCHITECTURES.build(compose([f"model={preset}", "model.roi_heads.num_classes=3"]).model, path="model")


@pytest.mark.parametrize("preset", STRUCTURES)  # the default job's model is mask_rcnn_R_18_FPN_quick
def test_every_option_composes_and_builds_on_every_preset(preset):
    base = [f"model={preset}"]
    failures = []
    for group, option in OPTIONS:
        overrides = base + [f"{group}={option}", "model.roi_heads.num_classes=3"]
        try:
            try:
                cfg = compose(overrides)
                with torch.device("meta"):  # every constructor runs, no weights are allocated or initialised
                    META_ARCHITECTURES.build(cfg.model, path="model")
            except ConfigError as e:
                # a mask head that reads the feature maps is chosen with the pooler off, as its message says
                if FEATURE_MAP_HEAD_HINT not in str(e):
                    raise
                cfg = compose(overrides + ["model.roi_heads.mask_pooler=null"])
                with torch.device("meta"):
                    META_ARCHITECTURES.build(cfg.model, path="model")
        except ConfigError as e:
            if not _incompatible(group, option, e):
                failures.append(f"{group}={option}: {e}")
            continue
        assert (group, option) not in INCOMPATIBLE, f"{group}={option} was expected to fail on {preset}"
    assert not failures, "\n".join(failures)


# STRUCTURES: a preset that differs from another only in size sets the same component values (the
# default job's model is mask_rcnn_R_18_FPN_quick, one of them).
@pytest.mark.parametrize("preset", STRUCTURES)
def test_a_chosen_component_gets_its_own_defaults(preset):
    """Choosing another registered component by name gives it its signature defaults, whatever the
    preset set for the component it replaces."""
    base = [f"model={preset}"]
    preset_cfg = compose(base)
    for group, registry in iter_groups():
        if group == "model" or "/" not in group:
            continue
        current = _node(preset_cfg, group)
        for name, component in registry:
            if (group, name) in INCOMPATIBLE or (current is not None and current.name == name):
                continue
            cfg = compose(base + [f"{group}={name}"])
            node = _node(cfg, group)
            assert node.name == name
            for knob in knobs(component):
                if knob.registry is not None or knob.default is inspect.Parameter.empty or knob.name == "num_classes":
                    continue
                value = node[knob.name]
                value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
                expected = _plain(knob.default)
                assert value == expected, f"{preset} + {group}={name}: {knob.name} = {value!r}, its default is {expected!r}"


def _plain(value):
    """Tuples as lists, as OmegaConf holds them."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
