"""One message, naming what to fix: a module that does not export (its path, class and operation),
an unknown --format, a missing run directory (exit code 2 from the command)."""

from __future__ import annotations

import logging

import pytest
import torch

from framework.config.compose import compose
from framework.engine.builders import build_model
from framework.errors import ConfigError, ExportError
from framework.export.build import exported_resize
from framework.export.cli import main as export_main
from framework.export.module import ExportablePredictor
from framework.export.onnx import write_onnx
from framework.export.torch_export import export_program


def _exportable(cfg_overrides=()):
    cfg = compose(list(cfg_overrides))
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu")).eval()
    return ExportablePredictor(model=model, short_edge=128, max_size=192, mask_on=True)


class ValueBranchingHead(torch.nn.Module):
    """An RPN head that branches on tensor values: torch.export cannot record that. (The RPN's
    head, not a later one: recording stops there, after the backbone only.)"""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, features):
        if features[0].mean() > 0:  # a Python branch on data
            features = [f * 1.0 for f in features]
        return self.inner(features)


class StableSortHead(torch.nn.Module):
    """A head using aten.sort.stable, which torch.export records but ONNX cannot translate."""

    def forward(self, x):
        return x + 0 * torch.sort(x, dim=1, stable=True)[0]


class SmallDetector(torch.nn.Module):
    """An image-in model whose ``head`` does not translate to ONNX: what the message must name
    does not depend on the model's size, and a whole predictor costs a minute to translate."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 1)
        self.head = StableSortHead()

    def forward(self, image):
        return self.head(self.stem(image.permute(2, 0, 1)[None].float()))


def test_value_branch_names_module_and_line():
    module = _exportable()
    module.model.proposal_generator.rpn_head = ValueBranchingHead(module.model.proposal_generator.rpn_head)
    with pytest.raises(ExportError) as e:
        export_program(module)
    message = str(e.value)
    assert "module model.proposal_generator.rpn_head (ValueBranchingHead)" in message
    assert "test_errors.py" in message and "if features[0].mean() > 0" in message
    assert "docs/deployment.md" in message and "\n" not in message


def test_command_prints_one_message_for_a_module_that_does_not_export(capfd, caplog, monkeypatch, tmp_path):
    # the module of the test above, through framework-export: what torch.export prints while it
    # fails (a partial graph, at file-descriptor level too) stays out of stderr unless --verbose
    module = _exportable()
    module.model.proposal_generator.rpn_head = ValueBranchingHead(module.model.proposal_generator.rpn_head)
    monkeypatch.setattr("framework.export.exporter.build_exportable", lambda cfg, weights: module)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")  # never read: the module above is exported
    argv = ["--format", "torch_export", "--output", str(tmp_path / "out"), f"weights={weights}"]
    capfd.readouterr()
    assert export_main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: cannot export module model.proposal_generator.rpn_head (ValueBranchingHead)")
    assert "\n" not in err, err[:2000]
    # --verbose logs it at DEBUG (to stderr in a shell; pytest's log capture here)
    monkeypatch.setattr(logging.getLogger("framework.export"), "level", logging.NOTSET)  # restored after
    assert export_main([*argv, "--verbose"]) == 2
    printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("torch.export printed:")]
    assert printed and "aten." in printed[0]  # the partial graph torch printed
    assert capfd.readouterr().err.strip() == err


def test_op_without_onnx_translation_names_module_and_op(tmp_path):
    program = export_program(SmallDetector())  # torch.export records it ...
    with pytest.raises(ExportError) as e:  # ... ONNX has no translation
        write_onnx(program, tmp_path / "m.onnx", output_names=["features"])
    message = str(e.value)
    assert "aten.sort.stable" in message and "module head (StableSortHead)" in message
    assert "docs/deployment.md" in message and "\n" not in message


def test_test_pipeline_read_from_the_augmentations_list():
    assert exported_resize(compose([])) == (224, 400, "detectron2")  # configs/train.yaml's input.test
    torchvision_style = compose(["input.test.augmentations=[{name: ResizeShortestEdgeTorchvision, "
                                 "short_edge_length: [96], max_size: 160}]"])
    assert exported_resize(torchvision_style) == (96, 160, "torchvision")
    assert exported_resize(compose(["input.test.augmentations=[]"]))[0] == 0  # no resize


def test_test_pipeline_that_does_not_export_is_named():
    flipped = compose(["input.test.augmentations=[{name: ResizeShortestEdge, short_edge_length: [96]}, "
                       "{name: RandomHorizontalFlip}]"])
    with pytest.raises(ExportError, match=r"'input.test.augmentations.1' \(RandomHorizontalFlip\) does not export"):
        exported_resize(flipped)
    with pytest.raises(ConfigError, match=r"input.test.augmentations.0.short_edge_length' must hold one test size"):
        exported_resize(compose(["input.test.augmentations.0.short_edge_length=[224,256]"]))


def test_unknown_format_is_one_line(capsys, tmp_path):
    assert export_main([str(tmp_path), "--format", "onx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --format 'onx' is not an export format; valid: onnx, torch_export. Did you mean 'onnx'?"


def test_missing_run_directory_is_one_line(capsys, tmp_path):
    missing = tmp_path / "no_such_run"
    assert export_main([str(missing), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run directory {missing} not found") and "\n" not in err


def test_no_model_named_is_one_line(capsys, tmp_path):
    assert export_main(["--format", "onnx", "--output", str(tmp_path), "model=mask_rcnn_R_50_FPN"]) == 2
    assert "weights=<checkpoint file>" in capsys.readouterr().err


def test_unknown_mask_paste_rule_is_named():
    with pytest.raises(ConfigError, match=r"mask_paste must be one of detectron2, torchvision, got 'nearest'"):
        ExportablePredictor(model=torch.nn.Identity(), short_edge=0, max_size=1, mask_on=True, mask_paste="nearest")
