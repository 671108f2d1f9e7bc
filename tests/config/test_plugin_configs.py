"""Plugins ship YAML configs (presets, experiments, component options) that Hydra finds as options."""

from __future__ import annotations

import pytest
import torch
from hydra.core.config_store import ConfigStore

from framework.config.compose import CONFIG_DIR, compose
from framework.config.listing import describe_plugin_configs
from framework.config.plugin_configs import find_plugin_configs, register_plugin_configs
from framework.errors import ConfigError
from framework.registry import META_ARCHITECTURES, MASK_HEADS


def test_a_project_folder_ships_a_preset_and_a_component_option():
    cfg = compose(["model=mask_rcnn_R_18_FPN_quick_lite"])
    head = cfg.model.roi_heads.mask_head
    assert (head.name, head.num_conv, head.conv_dim) == ("LiteMaskHead", 2, 64)
    assert cfg.model.backbone.bottom_up.depth == 18  # the rest is the default job's model
    with torch.device("meta"):
        model = META_ARCHITECTURES.build(cfg.model, path="model")
    assert type(model.roi_heads.mask_head).__name__ == "LiteMaskHead"
    cfg = compose(["model=mask_rcnn_R_50_FPN", "model/roi_heads/mask_head=LiteMaskHead_small"])
    assert cfg.model.roi_heads.mask_head.conv_dim == 64 and cfg.model.backbone.bottom_up.depth == 50
    listed = {option: (plugin, path) for option, plugin, path in describe_plugin_configs()}
    assert listed["model/mask_rcnn_R_18_FPN_quick_lite"] == (
        "lite_mask_head", "configs/model/mask_rcnn_R_18_FPN_quick_lite.yaml")


def _plugin(root, name: str, files: dict[str, str]):
    folder = root / name
    for rel, text in files.items():
        (folder / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "configs" / rel).write_text(text)
    return folder


def test_an_experiment_with_a_global_package_is_an_experiment(tmp_path):
    folder = _plugin(tmp_path, "exp_plugin", {
        "experiment/exp_plugin_short.yaml": "# @package _global_\ntrain:\n  max_iter: 7\nsolver:\n  base_lr: 0.005\n",
    })
    register_plugin_configs({"exp_plugin": folder}, CONFIG_DIR)
    cfg = compose(["experiment=exp_plugin_short"])
    assert cfg.train.max_iter == 7 and cfg.solver.base_lr == 0.005


def test_the_same_option_twice_names_both_origins(tmp_path):
    a = _plugin(tmp_path, "plugin_a", {"model/clash_preset.yaml": "defaults:\n  - mask_rcnn_R_50_FPN\n"})
    b = _plugin(tmp_path, "plugin_b", {"model/clash_preset.yaml": "defaults:\n  - faster_rcnn_R_50_FPN\n"})
    with pytest.raises(ConfigError, match=r"'model/clash_preset' is shipped by two plugins: 'plugin_a' .* and 'plugin_b'"):
        register_plugin_configs({"plugin_a": a, "plugin_b": b}, CONFIG_DIR)
    assert "clash_preset.yaml" not in ConfigStore.instance().list("model")  # nothing half-registered


@pytest.mark.parametrize("rel, origin", [
    ("model/mask_rcnn_R_50_FPN.yaml", "the shipped configs"),
    ("model/roi_heads/mask_head/MaskRCNNConvUpsampleHead.yaml", "a registered component"),
])
def test_an_option_that_exists_already_is_refused(tmp_path, rel, origin):
    folder = _plugin(tmp_path, "shadowing", {rel: "{}\n"})
    with pytest.raises(ConfigError, match=f"of plugin 'shadowing' .* is already defined by {origin}"):
        register_plugin_configs({"shadowing": folder}, CONFIG_DIR)


def test_a_file_outside_any_group_is_refused(tmp_path):
    folder = _plugin(tmp_path, "flat", {"train.yaml": "{}\n"})
    with pytest.raises(ConfigError, match="not in a config group folder"):
        find_plugin_configs({"flat": folder})


def test_two_plugins_registering_one_component_name_are_both_named():
    from framework.modeling.roi_heads.mask_head import BaseMaskRCNNHead

    class Impostor(BaseMaskRCNNHead):
        pass

    with pytest.raises(KeyError, match=r"Impostor cannot register the name 'LiteMaskHead'.*already registered by "
                                       r"projects\.lite_mask_head\.head\.LiteMaskHead"):
        MASK_HEADS.register(name="LiteMaskHead")(Impostor)


def test_a_pip_installed_package_ships_configs(tmp_path, installed_plugin):
    import sys

    from framework.config import plugins

    pkg = tmp_path / "cfg_plugin_pkg"
    (pkg / "configs" / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configs" / "model" / "cfg_pkg_preset.yaml").write_text(
        "defaults:\n  - mask_rcnn_R_50_FPN\n  - _self_\nrpn:\n  nms_thresh: 0.61\n")
    installed_plugin("cfg_plugin", "cfg_plugin_pkg")
    try:
        plugins.discover_plugins()
        assert plugins.plugin_folders()["cfg_plugin"] == pkg.resolve()
        register_plugin_configs({"cfg_plugin": plugins.plugin_folders()["cfg_plugin"]}, CONFIG_DIR)
        assert compose(["model=cfg_pkg_preset"]).model.rpn.nms_thresh == 0.61
    finally:
        plugins._loaded.pop("cfg_plugin", None)
        plugins._folders.pop("cfg_plugin", None)
        sys.modules.pop("cfg_plugin_pkg", None)
