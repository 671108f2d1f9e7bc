"""The run's dataset resolution: clear errors for names, files and class counts (no training)."""

import pytest

from framework.config.compose import compose
from framework.engine.builders import build_datasets
from framework.errors import ConfigError


def test_unknown_dataset_name_suggests_registered_ones():
    with pytest.raises(ConfigError, match=r"dataset\.train\.name.*'synthtic_train'.*Did you mean 'synthetic_train'"):
        build_datasets(compose(["dataset.train.name=synthtic_train"]))


def test_missing_json_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"
    cfg = compose(["dataset=coco_json", f"dataset.train.json={missing}", f"dataset.train.image_root={tmp_path}",
                   f"dataset.test.json={missing}", f"dataset.test.image_root={tmp_path}", "dataset.num_classes=3"])
    with pytest.raises(ConfigError, match=r"dataset\.train\.json.*file not found.*nope\.json"):
        build_datasets(cfg)


def test_class_count_mismatch_gives_the_right_value():
    with pytest.raises(ConfigError, match=r"num_classes.*is 7 but dataset 'synthetic_val' has 4 classes.*dataset\.num_classes=4"):
        build_datasets(compose(["dataset.num_classes=7"]))


def test_synthetic_dataset_resolves():
    data = build_datasets(compose([]))
    assert data.train_name == "synthetic_train" and len(data.train) == 300
    assert list(data.metadata.thing_classes) == ["disk", "square", "triangle", "cross"]


def test_eval_only_needs_only_the_test_split(tmp_path):
    """dataset=coco_json with only the test json given (train left at ???): eval_only never reads it."""
    from framework.checkpoint import Checkpointer
    from framework.config.compose import compose
    from framework.data.builtin import ensure_builtin_synthetic
    from framework.engine.builders import build_model, resolve_device
    from framework.engine.run import run

    val_json, val_root = ensure_builtin_synthetic()["val"]
    overrides = ["dataset=coco_json", "dataset.num_classes=4", f"dataset.test.json={val_json}",
                 f"dataset.test.image_root={val_root}", "input.test.augmentations.0.short_edge_length=[128]",
                 "input.test.augmentations.0.max_size=192",
                 "dataloader.test.num_workers=0", "model.rpn.post_nms_topk_test=50"]
    cfg = compose(overrides)
    weights = tmp_path / "w.pth"
    Checkpointer(build_model(cfg, resolve_device("cpu")), str(tmp_path)).save("w")
    run(compose(overrides + ["eval_only=true", f"weights={weights}"]), output_dir=tmp_path / "eval")
    assert "bbox/AP" in (tmp_path / "eval" / "metrics.json").read_text()


@pytest.mark.parametrize("overrides, metric, available", [
    (["model.roi_heads.mask_head=null", "hooks.best_checkpointer.metric=segm/AP"], "'segm/AP'", "bbox/AP, bbox/AP50"),
    (["evaluators.coco.tasks=[bbox]", "hooks.best_checkpointer.metric=segm/AP"], "'segm/AP'", "bbox/AP, bbox/AP50"),
    (["hooks.best_checkpointer.metric=segm/APx"], "'segm/APx'", "segm/AP, segm/AP50"),
])
def test_a_best_metric_no_evaluator_produces_fails_before_training(tmp_path, overrides, metric, available):
    from framework.engine.run import run

    with pytest.raises(ConfigError, match=rf"hooks\.best_checkpointer\.metric.*{metric} is not among the metrics the "
                                          rf"configured evaluators produce.*Available: .*{available}"):
        run(compose(["train.max_iter=2", "dataloader.train.num_workers=0", *overrides]), output_dir=tmp_path)
    assert "Starting training" not in (tmp_path / "log.txt").read_text()
    assert not list(tmp_path.glob("*.pth"))
