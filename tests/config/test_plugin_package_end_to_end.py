"""Issue 6's acceptance test: a plugin package written from scratch, pip-installed, used from the
installed command on the default job and on R50-FPN, with nothing under framework/ or configs/ edited.

The R50-FPN run is in test_variant_plugin_package.py, which installs this package beside its own and
trains R50-FPN with parts of both (this package's pooler as the box pooler): one R50 training
instead of two, for CI's time."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "tiny-heads"
        version = "0.1"

        [project.entry-points."framework.plugins"]
        tiny_heads = "tiny_heads"

        [tool.setuptools]
        packages = ["tiny_heads"]

        [tool.setuptools.package-data]
        tiny_heads = ["configs/**/*.yaml"]
    """,
    "tiny_heads/__init__.py": '''
        """A mask head whose knobs share no name with the standard head's, and a pooler."""
        import torch
        from torch import nn

        from framework.modeling.poolers import ROIAlign
        from framework.modeling.roi_heads.mask_head import BaseMaskRCNNHead
        from framework.registry import MASK_HEADS, ROI_POOLERS


        @MASK_HEADS.register()
        class TinyMaskHead(BaseMaskRCNNHead):
            def __init__(self, input_shape, num_classes, *, width: int = 16, depth: int = 1, **kwargs):
                super().__init__(**kwargs)
                layers, cur = [], input_shape.channels
                for _ in range(depth):
                    layers += [nn.Conv2d(cur, width, 3, padding=1), nn.ReLU()]
                    cur = width
                self.tiny_blocks = nn.Sequential(*layers)
                self.tiny_up = nn.ConvTranspose2d(cur, width, 2, stride=2)
                self.tiny_logits = nn.Conv2d(width, num_classes, 1)

            def layers(self, x):
                return self.tiny_logits(torch.relu(self.tiny_up(self.tiny_blocks(x))))


        @ROI_POOLERS.register()
        class ScaledROIAlign(ROIAlign):
            """ROIAlign whose output is multiplied by a gain."""

            def __init__(self, output_size, scales, *, gain: float = 1.0, **kwargs):
                super().__init__(output_size, scales, **kwargs)
                self.gain = gain

            def pool(self, feature, rois, scale):
                return super().pool(feature, rois, scale) * self.gain
    ''',
    "tiny_heads/configs/model/tiny_quick.yaml": """
        # the default job's model with the plugin's head and pooler
        defaults:
          - mask_rcnn_R_18_FPN_quick
          - override roi_heads/mask_head: TinyMaskHead
          - override roi_heads/mask_pooler: ScaledROIAlign
          - _self_
    """,
}

def _fingerprint() -> str:
    digest = hashlib.sha256()
    for folder in ("framework", "configs"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_a_pip_installed_plugin_runs_on_the_default_job(tmp_path, pip_install_into, short_job):
    before = _fingerprint()
    source = tmp_path / "tiny_heads_src"
    for rel, text in PLUGIN.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path / "site"
    pip_install_into(source, site)
    assert (site / "tiny_heads" / "configs" / "model" / "tiny_quick.yaml").is_file()

    command = Path(sys.executable).parent / "framework-train"  # the framework's installed console command
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    runs = {
        "default": ["model/roi_heads/mask_head=TinyMaskHead", "model/roi_heads/mask_pooler=ScaledROIAlign",
                    "model.roi_heads.mask_head.width=8", "model.roi_heads.mask_pooler.gain=0.5"],
        "preset": ["model=tiny_quick"],
    }
    for name, overrides in runs.items():
        args = [*short_job, "input.train.augmentations.0.max_size=200", "input.test.augmentations.0.max_size=200",
                *overrides]
        res = subprocess.run([str(command), *args, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{name}: {res.stderr[-3000:]}"
        assert "Final: bbox AP" in res.stdout and "segm AP" in res.stdout
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["iteration"] == 2 and "segm/AP" in metrics
        weights = torch.load(tmp_path / name / "model_final.pth", weights_only=True)["model"]
        assert any(k.startswith("roi_heads.mask_head.tiny_blocks.") for k in weights), name
    config = (tmp_path / "default" / "config.yaml").read_text()
    assert "width: 8" in config and "gain: 0.5" in config and "conv_dim" not in config.split("mask_head:")[1].split("mask_pooler:")[0]
    assert _fingerprint() == before  # nothing under framework/ or configs/ was written
