"""tools/convert_checkpoint.py: our .pth <-> detectron2 model-zoo .pkl round trips, backbones, errors."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ckpt_helpers import build, caffe2_name

from framework.checkpoint import Checkpointer, load_weights

QUICK = ("model=mask_rcnn_R_18_FPN_quick", "model.roi_heads.box_predictor.test_score_thresh=0.0")
TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_checkpoint.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("convert_checkpoint", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 96, 128, generator=g) * 255
    with torch.no_grad():
        (out,) = model([{"image": image}])
    inst = out["instances"]
    assert len(inst) > 0
    return [inst.pred_boxes.tensor, inst.scores, inst.pred_classes, inst.pred_masks]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def test_round_trip_through_pkl_and_pth_gives_identical_outputs(tmp_path, tool):
    """(c) Our checkpoint -> .pkl -> .pth, each loaded into a differently initialised model."""
    model = build(*QUICK, seed=3)
    expected = _outputs(model)
    saved = Checkpointer(model, str(tmp_path)).save("model_final", iteration=7)
    pkl, pth = str(tmp_path / "zoo.pkl"), str(tmp_path / "back.pth")
    assert tool.main(["--input", saved, "--output", pkl]) == 0
    assert tool.main(["--input", pkl, "--output", pth, "--format", "pth"]) == 0

    with open(pkl, "rb") as f:  # our own file: plain pickle is fine here
        zoo = pickle.load(f)
    assert zoo["matching_heuristics"] is False and "model_final.pth" in zoo["__author__"]
    assert zoo["model"].keys() == model.state_dict().keys()
    assert all(isinstance(v, np.ndarray) for v in zoo["model"].values())
    assert torch.load(pth, weights_only=True).keys() == {"model"}  # weights only: no "iteration"

    for path in (pkl, pth):
        fresh = build(*QUICK, seed=4)
        assert not _same(_outputs(fresh), expected)
        report = load_weights(fresh, path)
        assert report.missing == report.unexpected == report.wrong_shape == ()
        assert _same(_outputs(fresh), expected), path


def test_backbone_files_need_the_target_model(tmp_path, tool, capsys):
    resnet = build(*QUICK).backbone.bottom_up.state_dict()
    c2 = {caffe2_name(k): v.numpy() for k, v in resnet.items() if not k.endswith("num_batches_tracked")}
    src, out = tmp_path / "R-18.pkl", str(tmp_path / "R-18.pth")
    src.write_bytes(pickle.dumps(c2, protocol=2))
    assert tool.main(["--input", str(src), "--output", out]) == 2
    assert "model=mask_rcnn_R_50_FPN" in capsys.readouterr().err

    assert tool.main(["--input", str(src), "--output", out, "model=mask_rcnn_R_18_FPN_quick"]) == 0
    weights = torch.load(out, weights_only=True)["model"]
    assert weights.keys() == {f"backbone.bottom_up.{k}" for k in resnet if not k.endswith("num_batches_tracked")}
    assert torch.equal(weights["backbone.bottom_up.stem.conv1.weight"], resnet["stem.conv1.weight"])


def test_errors_exit_2_with_one_message(tmp_path, tool, capsys):
    assert tool.main(["--input", str(tmp_path / "nope.pkl"), "--output", str(tmp_path / "x.pth")]) == 2
    assert "nope.pkl" in capsys.readouterr().err
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # os.system("true")
    assert tool.main(["--input", str(evil), "--output", str(tmp_path / "x.pth")]) == 2
    assert "refusing to load the global os.system" in capsys.readouterr().err
    good = tmp_path / "w.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, good)
    assert tool.main(["--input", str(good), "--output", str(tmp_path / "x.bin")]) == 2
    assert "must be 'pth' or 'pkl'" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "x.bin").exists()
