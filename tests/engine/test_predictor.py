"""Predictor: built from a run directory or a config, the same detections as the evaluation, clear errors.

The run is untrained (random initialisation) but laid out as tools/train_net.py leaves it:
the resolved config.yaml, model_final.pth and the last_checkpoint pointer.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from framework.checkpoint import Checkpointer
from framework.config.compose import compose
from framework.data.coco import load_coco_json
from framework.data.detection_utils import ImageReadError
from framework.data.synthetic import generate_synthetic_coco
from framework.engine.predictor import Predictor, find_checkpoint, load_run_config, resolve_metadata
from framework.engine.builders import build_mapper, build_model
from framework.errors import ConfigError
from framework.evaluation.evaluator import DatasetEvaluator, inference_on_dataset
from framework.structures import Instances

FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = compose(["model=mask_rcnn_R_18_FPN_quick"])
    run = tmp_path_factory.mktemp("run")
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    Checkpointer(build_model(cfg, torch.device("cpu")), str(run)).save("model_final")
    return run


@pytest.fixture(scope="module")
def dataset_dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return load_coco_json(generate_synthetic_coco(root, split="val", num_images=2, seed=0), root / "val")[0]


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.from_run(run_dir, device="cpu")


def assert_same(a: Instances, b: Instances, *, exact: bool = True) -> None:
    """The same detections: bitwise, or (``exact=False``) within float rounding: boxes and scores to
    1e-4, the same classes, masks differing in at most 0.1% of their pixels (a pixel at 0.5)."""
    assert a.image_size == b.image_size and len(a) == len(b)
    for name in FIELDS:
        x, y = a.get(name), b.get(name)
        x, y = getattr(x, "tensor", x), getattr(y, "tensor", y)
        if exact or x.dtype == torch.int64:
            assert torch.equal(x, y), name
        elif x.dtype == torch.bool:
            assert (x != y).float().mean() <= 1e-3, name
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4, msg=name)


def test_detections_at_original_size(predictor, dataset_dicts):
    d = dataset_dicts[0]
    out = predictor(d["file_name"])
    h, w = d["height"], d["width"]
    assert isinstance(out, Instances) and out.image_size == (h, w)
    assert len(out) > 0  # a random head scores every class ~1/K, above the 0.05 test threshold
    assert out.pred_masks.shape == (len(out), h, w) and out.pred_masks.dtype == torch.bool
    assert out.pred_classes.max() < 4 and out.scores.device.type == "cpu"
    boxes = out.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


class Collect(DatasetEvaluator):
    def __init__(self) -> None:
        self.outputs: dict[str, Instances] = {}

    def process(self, inputs, outputs):
        for i, o in zip(inputs, outputs):
            self.outputs[i["file_name"]] = o["instances"].to("cpu")

    def evaluate(self):
        return {}


def test_same_detections_as_the_evaluation(predictor, dataset_dicts):
    from framework.data.build import build_test_loader

    collect = Collect()
    loader = build_test_loader(dataset_dicts, build_mapper(predictor.cfg, "test"), batch_size=1, num_workers=0)
    inference_on_dataset(predictor.model, loader, collect)
    assert len(collect.outputs) == len(dataset_dicts)
    for d in dataset_dicts:
        assert_same(predictor(d["file_name"]), collect.outputs[d["file_name"]])


def test_path_pil_and_array_inputs_agree(predictor, dataset_dicts):
    path = dataset_dicts[0]["file_name"]
    expected = predictor(path)
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    for image in (pil, array, np.asfortranarray(array), Path(path)):
        assert_same(predictor(image), expected)


def test_a_batch_equals_single_calls(predictor, dataset_dicts):
    image = np.asarray(Image.open(dataset_dicts[0]["file_name"]).convert("RGB"))
    images = [image, np.ascontiguousarray(image[:, ::-1])]  # same size: nothing is padded differently
    # Kernels pick their algorithm by batch size (oneDNN convolutions, matmuls), so the results may
    # differ in the last bits: a batch reproduces single calls within rounding.
    singles = [predictor(x) for x in images]
    batched = predictor(images, batch_size=2)
    assert isinstance(batched, list) and len(batched) == 2
    for a, b in zip(batched, singles):
        assert_same(a, b, exact=False)
    assert predictor([]) == []


def test_from_config_matches_from_run(predictor, run_dir, dataset_dicts):
    other = Predictor.from_config(["model=mask_rcnn_R_18_FPN_quick"], weights=run_dir / "model_final.pth", device="cpu")
    assert_same(other(dataset_dicts[1]["file_name"]), predictor(dataset_dicts[1]["file_name"]))


def test_checkpoint_choice(run_dir, tmp_path, dataset_dicts):
    run = shutil.copytree(run_dir, tmp_path / "run")
    assert find_checkpoint(run) == find_checkpoint(run, "last") == run / "model_final.pth"
    cfg = load_run_config(run)
    model = build_model(cfg, torch.device("cpu"))
    Checkpointer(model, str(run)).load(str(run / "model_final.pth"))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[-1] += 5.0  # background wins: no detections
    Checkpointer(model, str(run)).save("model_best", tag_last=False)
    assert find_checkpoint(run) == run / "model_best.pth" and find_checkpoint(run, "last") == run / "model_final.pth"
    assert find_checkpoint(run, "model_best.pth") == run / "model_best.pth"
    best = Predictor.from_run(run, device="cpu")
    assert best.weights == str(run / "model_best.pth")
    assert len(best(dataset_dicts[0]["file_name"])) == 0  # the best weights were loaded, not the final ones
    (run / "last_checkpoint").unlink()
    assert find_checkpoint(run, "last") == run / "model_final.pth"


def test_overrides_change_the_run_config(run_dir):
    cfg = load_run_config(run_dir, ["input.test.augmentations.0.short_edge_length=[160]",
                                    "model.roi_heads.box_predictor.test_score_thresh=0.3"])
    resize = cfg.input.test.augmentations[0]
    assert list(resize.short_edge_length) == [160] and cfg.model.roi_heads.box_predictor.test_score_thresh == 0.3
    assert resize.max_size == 400  # the rest is the run's


def test_run_errors_name_the_path(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"run directory {tmp_path / 'nope'} not found"):
        Predictor.from_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'config.yaml'} not found.*not a run directory"):
        Predictor.from_run(tmp_path)
    (tmp_path / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*model_best\.pth.*last_checkpoint.*model_final\.pth"):
        find_checkpoint(tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000199.pth")
    with pytest.raises(FileNotFoundError, match=r"last_checkpoint points to model_0000199\.pth, which does not exist "
                                                r"in .*; use checkpoint='best' or the path of an existing \.pth file"):
        find_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'other\.pth' not found"):
        find_checkpoint(tmp_path, "other.pth")


def test_override_errors(run_dir):
    with pytest.raises(ConfigError, match=r"no key 'input\.test\.augmentations\.0\.max_sise'.*Did you mean 'max_size'"):
        load_run_config(run_dir, ["input.test.augmentations.0.max_sise=160"])
    with pytest.raises(ConfigError, match=r"'model' is a config section.*group choice.*from_config"):
        load_run_config(run_dir, ["model=mask_rcnn_R_50_FPN"])
    with pytest.raises(ConfigError, match=r"only plain key=value"):
        load_run_config(run_dir, ["seed=1,2"])
    with pytest.raises(ConfigError, match=r"cannot parse overrides \['seed=\[1'\] of .*config\.yaml \(each must be "
                                          r"key=value, e\.g\. model\.roi_heads\.box_predictor\.test_score_thresh=0\.3\): "):
        load_run_config(run_dir, ["seed=[1"])


def test_from_config_needs_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"needs weights=<checkpoint file>"):
        Predictor.from_config([])
    with pytest.raises(FileNotFoundError, match=rf"weights file {tmp_path / 'w.pth'} not found \(Predictor.from_config "
                                                rf"weights='{tmp_path / 'w.pth'}'\); expected a .pth of a run or a "
                                                rf"model-zoo .pkl"):
        Predictor.from_config([], weights=tmp_path / "w.pth")


def test_input_errors(predictor, tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(TypeError, match=r"expected a uint8 array.*got float32"):
        predictor(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"got shape \(3, 20, 30\) \(channels first"):
        predictor(image.transpose(2, 0, 1))
    with pytest.raises(ValueError, match=r"image 1 of 2: expected an \(H, W, 3\) RGB array, got shape \(20, 30\) \(grayscale"):
        predictor([image, image[..., 0]])
    with pytest.raises(TypeError, match=r"a file path, a PIL image or .* got Tensor; for a \(3, H, W\) tensor"):
        predictor(torch.zeros(3, 20, 30, dtype=torch.uint8))
    with pytest.raises(ImageReadError, match=rf"{tmp_path / 'missing.jpg'}: file not found"):
        predictor(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match=r"batch_size=...\): batch_size must be a positive int \(images per forward "
                                         r"pass\), got 0 \(int\)"):
        predictor(image, batch_size=0)
    with pytest.raises(ValueError, match=r"got 2.0 \(float\)"):
        predictor(image, batch_size=2.0)
    with pytest.raises(ValueError, match=r"got True \(bool\)"):
        predictor(image, batch_size=True)


def test_class_names_of_model_zoo_configs_without_coco_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_DATASETS", str(tmp_path))  # no COCO here
    meta = resolve_metadata(compose(["dataset=coco"]))
    assert meta.num_classes == 80 and meta.thing_classes[:2] == ["person", "bicycle"]
    assert meta.contiguous_id_to_dataset_id[79] == 90


def test_unresolvable_dataset_falls_back_to_numbered_classes(caplog):
    cfg = compose(["dataset.test.name=gone_val"])
    with caplog.at_level(logging.WARNING):
        meta = resolve_metadata(cfg)
    assert meta.thing_classes == ["class 0", "class 1", "class 2", "class 3"]
    assert "'gone_val' unavailable" in caplog.text and "no dataset named 'gone_val'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        meta = resolve_metadata(compose(["dataset=coco", "dataset.num_classes=3"]))
    assert meta.thing_classes == ["class 0", "class 1", "class 2"] and "has 80 classes but the model predicts 3" in caplog.text
