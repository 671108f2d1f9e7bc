"""Every shipped model preset and every plugin in projects/ trains a couple of iterations and is
evaluated under the default hooks, none switched off: a preset that the default job's hooks cannot
run (e.g. a box-only model under a mask-AP best checkpoint) fails here, not in a user's hands."""

from __future__ import annotations

import json

import pytest
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


PLUGIN_CASES = _plugin_cases()
CASES = [*SHIPPED_PRESETS, "model.roi_heads.mask_head=null", *(c for cs in PLUGIN_CASES.values() for c in cs)]


def test_every_plugin_has_a_case():
    assert set(PLUGIN_CASES) == set(plugin_folders()) and all(PLUGIN_CASES.values())
    assert "model=faster_rcnn_R_50_FPN" in SHIPPED_PRESETS and len(SHIPPED_PRESETS) >= 6


@pytest.mark.parametrize("override", CASES)
def test_runs_under_the_default_hooks(override, tmp_path):
    cfg = compose([*tiny_job(2), *first_test_images(4), override])
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
