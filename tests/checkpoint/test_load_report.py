"""The load report and what fails: fine-tuning on other classes, other architectures, partial files."""

from __future__ import annotations

import logging

import pytest
import torch
from ckpt_helpers import build
from fvcore.common.checkpoint import _IncompatibleKeys

from framework.checkpoint import Checkpointer, IncompatibleCheckpointError, LoadReport, load_weights
from framework.config.compose import compose

QUICK = "model=mask_rcnn_R_18_FPN_quick"
CLASS_SPECIFIC = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_head.predictor.weight",
    "roi_heads.mask_head.predictor.bias",
}


def _save(model: torch.nn.Module, tmp_path, state: dict | None = None) -> str:
    path = str(tmp_path / "src.pth")
    torch.save({"model": state if state is not None else model.state_dict()}, path)
    return path


def test_other_class_count_fails_and_suggests_skip_mismatch(tmp_path):
    path = _save(build(QUICK, "dataset.num_classes=4", seed=1), tmp_path)
    with pytest.raises(IncompatibleCheckpointError) as e:
        load_weights(build(QUICK, "dataset.num_classes=7"), path)
    message = str(e.value)
    assert path in message and "6 keys with another shape:" in message
    assert "roi_heads.box_predictor.cls_score.weight: (5, 256) in the checkpoint, (8, 256) in the model" in message
    assert "weights_skip_mismatch=true" in message


def test_skip_mismatch_keeps_every_other_weight_bit_identical(tmp_path, caplog):
    src = build(QUICK, "dataset.num_classes=4", seed=1).state_dict()
    path = _save(None, tmp_path, src)
    target = build(QUICK, "dataset.num_classes=7", seed=2)
    init = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="framework.checkpoint.checkpointer"):
        report = load_weights(target, path, skip_mismatch=True)
    assert {k for k, _, _ in report.wrong_shape} == CLASS_SPECIFIC
    assert report.missing == () and report.unexpected == () and report.conflicts == ()
    assert report.loaded == len(src) - len(CLASS_SPECIFIC)
    for k, v in target.state_dict().items():
        assert torch.equal(v, init[k] if k in CLASS_SPECIFIC else src[k]), k
    assert "6 keys with another shape (not loaded, keep their initialisation):" in caplog.text
    assert "roi_heads.mask_head.predictor.weight: (4, 64, 1, 1) in the checkpoint, (7, 64, 1, 1) in the model" in caplog.text


def test_another_architecture_fails_even_with_skip_mismatch(tmp_path):
    path = _save(build(QUICK, "model.backbone.bottom_up.depth=34"), tmp_path)  # res3 has 4 blocks, not 2
    for skip in (False, True):
        with pytest.raises(IncompatibleCheckpointError) as e:
            load_weights(build(QUICK), path, skip_mismatch=skip)
        message = str(e.value)
        # 96 unexpected keys, of which 80 conflict (num_batches_tracked never does)
        assert "80 checkpoint keys not in the model:\n    backbone.bottom_up.res2.2.conv1.weight\n" in message
        assert "another architecture" in message and "weights_skip_mismatch" not in message


def test_a_whole_part_on_one_side_only_is_no_conflict(tmp_path):
    """A Faster R-CNN file into a Mask R-CNN (its mask head starts fresh), and the other way round."""
    mask = build(QUICK, seed=1)
    faster_state = {k: v for k, v in mask.state_dict().items() if not k.startswith("roi_heads.mask_head.")}
    report = load_weights(build(QUICK), _save(None, tmp_path, faster_state))
    assert report.missing and all(k.startswith("roi_heads.mask_head.") for k in report.missing)
    assert report.conflicts == () and report.unexpected == ()

    # Mask R-CNN weights into a Faster R-CNN: the mask head keys are unexpected, of a part it lacks.
    unexpected = [k for k in mask.state_dict() if k.startswith("roi_heads.mask_head.")]
    report = LoadReport.build(
        path="mask.pth",
        source="test",
        model="GeneralizedRCNN",
        model_keys=faster_state,
        checkpoint_keys=mask.state_dict(),
        incompatible=_IncompatibleKeys(missing_keys=[], unexpected_keys=unexpected, incorrect_shapes=[]),
    )
    assert report.unexpected and report.conflicts == () and report.failure() is None


def test_missing_blocks_inside_a_part_are_a_conflict(tmp_path):
    model = build(QUICK, seed=1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.bottom_up.res5.1.")}
    with pytest.raises(IncompatibleCheckpointError, match=r"model keys not in the checkpoint:\n    backbone.bottom_up.res5.1"):
        load_weights(build(QUICK), _save(None, tmp_path, state))


def test_batch_norm_statistics_are_never_conflicts(tmp_path):
    model = build(QUICK, seed=1)  # norm=BN: running_mean / running_var / num_batches_tracked
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(("running_mean", "running_var"))}
    report = load_weights(build(QUICK), _save(None, tmp_path, state))
    assert report.missing and report.conflicts == ()


def test_a_file_of_unknown_names_fails(tmp_path):
    path = _save(None, tmp_path, {"encoder.layer.0.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)})
    with pytest.raises(IncompatibleCheckpointError, match=r"none of its 2 tensors matches a model key"):
        load_weights(build(QUICK), path)


def test_strict_fails_on_any_difference(tmp_path):
    model = build(QUICK, seed=1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("roi_heads.mask_head.")}
    path = _save(None, tmp_path, state)
    with pytest.raises(IncompatibleCheckpointError, match=r"strict loading needs every key to match"):
        Checkpointer(build(QUICK)).load(path, strict=True)


def test_a_clean_load_reports_and_logs_info(tmp_path, caplog):
    model = build(QUICK, seed=1)
    path = _save(model, tmp_path)
    with caplog.at_level(logging.INFO, logger="framework.checkpoint.checkpointer"):
        report = load_weights(build(QUICK), path)
    assert report.failure(strict=True) is None
    assert report.loaded == report.total == len(model.state_dict())
    assert f"{path} (detectron2 names (this framework's)) -> GeneralizedRCNN: {report.total} tensors loaded" in caplog.text


def test_weights_skip_mismatch_is_a_train_config_key():
    assert compose([]).weights_skip_mismatch is False
    assert compose(["weights_skip_mismatch=true"]).weights_skip_mismatch is True
