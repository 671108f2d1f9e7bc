"""Issue 25's acceptance test: a box predictor and a mask head that reads the feature maps itself,
written in a package outside the repository and pip-installed, selected from the installed command
on the default job and on R50-FPN, with nothing under framework/ or configs/ edited. Issue 6's
package (test_plugin_package_end_to_end.py) is installed beside it: its pooler is R50-FPN's box
pooler here, which is that test's R50 run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.config.test_plugin_package_end_to_end import PLUGIN as TINY_HEADS_PLUGIN
from tests.config.test_plugin_package_end_to_end import _fingerprint

PLUGIN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "variant-heads"
        version = "0.1"

        [project.entry-points."framework.plugins"]
        variant_heads = "variant_heads"

        [tool.setuptools]
        packages = ["variant_heads"]
    """,
    "variant_heads/__init__.py": '''
        """A box predictor with a softmax temperature, and a mask head that pools the finest map itself."""
        from collections.abc import Mapping

        import torch
        from torch import nn
        from torchvision.ops import roi_align

        from framework.layers import ShapeSpec
        from framework.modeling.roi_heads import FastRCNNOutputLayers
        from framework.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
        from framework.registry import BOX_PREDICTORS, MASK_HEADS


        @BOX_PREDICTORS.register()
        class TemperedOutputLayers(FastRCNNOutputLayers):
            """Fast R-CNN outputs whose class logits are divided by a temperature."""

            def __init__(self, input_shape, num_classes, *, cls_temperature: float = 1.0, **kwargs):
                super().__init__(input_shape, num_classes, **kwargs)
                self.cls_temperature = cls_temperature

            def forward(self, x):
                scores, deltas = super().forward(x)
                return scores / self.cls_temperature, deltas


        @MASK_HEADS.register()
        class FinestMapMaskHead(nn.Module):
            """Pools each box from the finest feature map at `side` x `side`, appends the box's position
            in its image (the image size normalises it), two convs, per-class logits."""

            def __init__(self, input_shape: Mapping[str, ShapeSpec], num_classes: int, *, side: int = 14):
                super().__init__()
                self.level, shape = min(input_shape.items(), key=lambda kv: kv[1].stride)
                self.stride, self.side = shape.stride, side
                self.map_convs = nn.Sequential(nn.Conv2d(shape.channels + 4, 16, 3, padding=1), nn.ReLU(),
                                               nn.Conv2d(16, num_classes, 1))

            def forward(self, features, instances):
                boxes = [(i.proposal_boxes if self.training else i.pred_boxes).tensor for i in instances]
                x = roi_align(features[self.level], boxes, self.side, 1.0 / self.stride, 2, aligned=True)
                where = torch.cat([b / b.new_tensor([i.image_size[1], i.image_size[0]] * 2)
                                   for b, i in zip(boxes, instances)])
                x = torch.cat([x, where[:, :, None, None].expand(-1, -1, self.side, self.side).to(x.dtype)], 1)
                logits = self.map_convs(x)
                if self.training:
                    return {"loss_mask": mask_rcnn_loss(logits, instances)}
                mask_rcnn_inference(logits, instances)
                return instances
    ''',
}

SELECT = ["model/roi_heads/box_predictor=TemperedOutputLayers", "model.roi_heads.box_predictor.cls_temperature=2",
          "model/roi_heads/mask_head=FinestMapMaskHead", "model.roi_heads.mask_pooler=null",
          "model.roi_heads.mask_head.side=10"]


@pytest.mark.slow
def test_pip_installed_box_predictor_and_feature_map_mask_head(tmp_path, pip_install_into, short_job):
    before = _fingerprint()
    sources = {"variant_heads_src": PLUGIN, "tiny_heads_src": TINY_HEADS_PLUGIN}
    for folder, files in sources.items():
        for rel, text in files.items():
            (tmp_path / folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / rel).write_text(textwrap.dedent(text).lstrip())
    site = tmp_path / "site"
    pip_install_into(tmp_path / "variant_heads_src", site, tmp_path / "tiny_heads_src")

    command = Path(sys.executable).parent / "framework-train"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}

    def train(name: str, overrides: list[str]) -> subprocess.CompletedProcess:
        args = [*short_job, "input.train.augmentations.0.max_size=200", "input.test.augmentations.0.max_size=200",
                *overrides]
        return subprocess.run([str(command), *args, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)

    runs = {"default": SELECT,
            "r50": ["model=mask_rcnn_R_50_FPN", *SELECT, "model/roi_heads/box_pooler=ScaledROIAlign",
                    "model.roi_heads.box_pooler.gain=0.5", "model.backbone.bottom_up.norm=BN",
                    "model.backbone.bottom_up.freeze_at=0"]}
    for name, overrides in runs.items():
        res = train(name, overrides)
        assert res.returncode == 0, f"{name}: {res.stderr[-3000:]}"
        assert "Final: bbox AP" in res.stdout and "segm AP" in res.stdout
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["iteration"] == 2 and "segm/AP" in metrics
        weights = torch.load(tmp_path / name / "model_final.pth", weights_only=True)["model"]
        assert any(k.startswith("roi_heads.mask_head.map_convs.") for k in weights), name
        assert not any(k.startswith("roi_heads.mask_pooler") for k in weights)
        config = (tmp_path / name / "config.yaml").read_text()
        assert "cls_temperature: 2" in config and "mask_pooler: null" in config, name
    assert "name: ScaledROIAlign" in (tmp_path / "r50" / "config.yaml").read_text()  # issue 6's pooler on R50
    assert _fingerprint() == before

    # forgetting mask_pooler=null is one message naming the key, before training
    res = train("no_null", [s for s in SELECT if "mask_pooler" not in s])
    assert res.returncode == 2 and "set model.roi_heads.mask_pooler=null" in res.stderr
    assert "Traceback" not in res.stderr
    # a typo in the predictor's name: one message with the close names
    res = train("typo", ["model/roi_heads/box_predictor=TemperedOutputLayer"])
    assert res.returncode == 2 and "Did you mean 'TemperedOutputLayers'" in res.stderr
    assert not (tmp_path / "typo" / "metrics.json").exists()
