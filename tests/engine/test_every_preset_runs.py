"""Every shipped model preset, every experiment preset on the built-in dataset and every plugin in
projects/ trains a couple of iterations and is evaluated under the default hooks, none switched off:
a preset that the default job's hooks cannot run (e.g. a box-only model under a mask-AP best
checkpoint) fails here, not in a user's hands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from tiny_job import first_test_images, tiny_job

from framework.config.compose import CONFIG_DIR, compose, setup
from framework.config.listing import describe_plugin_configs
from framework.config.plugins import plugin_folders
from framework.engine.run import run

pytestmark = pytest.mark.slow

SHIPPED_PRESETS = sorted(f"model={p.stem}" for p in (CONFIG_DIR / "model").glob("*.yaml"))


def _plugin_cases() -> dict[str, list[str]]:
    """Per plugin, the overrides that exercise it: its model presets, or else each option it ships."""
    setup()  # at collection, before the session fixture: plugins are discovered by it
    options: dict[str, list[str]] = {}
    for option, plugin, _ in describe_plugin_configs():
        options.setdefault(plugin, []).append(option)
    cases = {}
    for plugin, opts in options.items():
        presets = [o for o in opts if o.count("/") == 1 and o.startswith("model/")]
        cases[plugin] = [f"model={o.split('/', 1)[1]}" for o in presets] or [
            f"{o.rpartition('/')[0]}={o.rpartition('/')[2]}" for o in opts]
    return cases


def _changes_dataset(preset: Path) -> bool:
    """Whether an experiment preset, or one it includes from its group, overrides the dataset."""
    for entry in OmegaConf.load(preset).get("defaults", []):
        if isinstance(entry, DictConfig) and any(str(k).startswith("override /dataset") for k in entry):
            return True
        included = preset.parent / f"{entry}.yaml"
        if isinstance(entry, str) and included.is_file() and _changes_dataset(included):
            return True
    return False


def _quick_experiments() -> list[str]:
    """The experiment presets that keep the default dataset, the built-in synthetic set (the others
    need COCO). Read from their defaults lists: composing each would cost seconds at every collection."""
    presets = sorted((CONFIG_DIR / "experiment").glob("*.yaml"))
    return [f"experiment={p.stem}" for p in presets if not _changes_dataset(p)]


PLUGIN_CASES = _plugin_cases()
QUICK_EXPERIMENTS = _quick_experiments()
CASES = [*SHIPPED_PRESETS, "model.roi_heads.mask_head=null", *(c for cs in PLUGIN_CASES.values() for c in cs),
         *QUICK_EXPERIMENTS]


def test_every_plugin_has_a_case():
    assert set(PLUGIN_CASES) == set(plugin_folders()) and all(PLUGIN_CASES.values())
    assert "model=faster_rcnn_R_50_FPN" in SHIPPED_PRESETS and len(SHIPPED_PRESETS) >= 6
    assert "experiment=lsj_copy_paste_quick" in QUICK_EXPERIMENTS


@pytest.mark.parametrize("override", CASES)
def test_runs_under_the_default_hooks(override, tmp_path):
    job = tiny_job(2)
    if override.startswith("experiment="):  # its training pipeline is its own: the default's sizes do not fit it
        job = [o for o in job if not o.startswith("input.train.")]
    cfg = compose([*job, *first_test_images(4), override])
    assert cfg.dataset.train.name.startswith("synthetic")
    assert set(cfg.hooks) >= {"timer", "lr_scheduler", "checkpointer", "eval", "best_checkpointer", "visualizer",
                              "writer"} and all(h is not None for h in cfg.hooks.values())
    result = run(cfg, output_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    masks = cfg.model.roi_heads.mask_head is not None
    primary = "segm/AP" if masks else "bbox/AP"
    assert metrics["iteration"] == 2 and primary in metrics and ("segm/AP" in metrics) == masks
    assert result == metrics[primary]
    assert (tmp_path / "model_final.pth").is_file() and (tmp_path / "model_best.pth").is_file()
    assert f"New best {primary}=" in (tmp_path / "log.txt").read_text()
