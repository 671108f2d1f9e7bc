"""detectron2 model-zoo and MSRA/Caffe2 files: reading, name rules, and loading into our models."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from ckpt_helpers import build, caffe2_name

from framework.checkpoint import Checkpointer, load_checkpoint_file
from framework.checkpoint.convert import SAME_NAMES
from framework.checkpoint.detectron2 import (
    caffe2_to_resnet_name,
    convert_caffe2_backbone,
    drop_stale_keys,
    read_pkl,
    to_detectron2_zoo_layout,
)

R50 = ("model=mask_rcnn_R_50_FPN", "dataset=coco")


@pytest.mark.parametrize(
    "c2, ours",
    [
        ("conv1_w", "stem.conv1.weight"),
        ("res_conv1_bn_s", "stem.conv1.norm.weight"),
        ("res_conv1_bn_b", "stem.conv1.norm.bias"),
        ("res2_0_branch2a_w", "res2.0.conv1.weight"),
        ("res2_0_branch2a_bn_s", "res2.0.conv1.norm.weight"),
        ("res3_1_branch2b_bn_b", "res3.1.conv2.norm.bias"),
        ("res4_22_branch2c_w", "res4.22.conv3.weight"),
        ("res5_0_branch1_w", "res5.0.shortcut.weight"),
        ("res5_0_branch1_bn_rm", "res5.0.shortcut.norm.running_mean"),
        ("res5_0_branch1_bn_riv", "res5.0.shortcut.norm.running_var"),
        ("res2_1_branch2a_gn_s", "res2.1.conv1.norm.weight"),
        ("fc1000_w", None),
        ("fc1000_b", None),
        ("res2_0_branch2a_w_momentum", None),
    ],
)
def test_caffe2_names_by_rule(c2, ours):
    assert caffe2_to_resnet_name(c2) == ours


@pytest.mark.parametrize("name", ["conv1_bn_s", "res_conv1_w", "res2_0_branch2d_w", "res2_0_branch2a_bn_w", "fpn_res5_2_sum_w"])
def test_non_resnet_caffe2_names_are_refused(name):
    with pytest.raises(KeyError, match=name):
        caffe2_to_resnet_name(name)


def test_detectron1_detection_heads_are_refused_by_name():
    sd = {"conv1_w": torch.zeros(1), "fpn_inner_res5_2_sum_w": torch.zeros(1), "rpn_cls_logits_fpn2_w": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"2 Caffe2 tensor names .*fpn_inner_res5_2_sum_w, rpn_cls_logits_fpn2_w.*Detectron"):
        convert_caffe2_backbone(sd)


def test_drop_stale_keys_returns_the_same_dict_when_clean():
    clean = {"backbone.fpn_output2.weight": torch.zeros(1)}
    assert drop_stale_keys(clean) is clean
    stale = {
        **clean,
        "pixel_mean": torch.zeros(3),
        "pixel_std": torch.ones(3),
        "proposal_generator.anchor_generator.cell_anchors.0": torch.zeros(3, 4),
        "proposal_generator.anchor_generator.cell_anchors.4": torch.zeros(3, 4),
    }
    assert list(drop_stale_keys(stale)) == ["backbone.fpn_output2.weight"]


@pytest.mark.parametrize(
    "layout, extras",
    [
        (lambda w: {"model": w, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False},
         {"__author__": "Detectron2 Model Zoo", "matching_heuristics": False}),
        (lambda w: {"blobs": {**w, "a_w_momentum": np.zeros(1)}, "cfg": "a Detectron yaml"}, {}),
        (lambda w: {**w, "a_w_momentum": np.zeros(1)}, {}),  # MSRA ImageNet files: a bare dict
    ],
    ids=["detectron2", "detectron", "bare"],
)
def test_read_pkl_layouts(tmp_path, layout, extras):
    weights = {"a_w": np.arange(3, dtype=np.float32), "b": np.array(2.0)}
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(layout(weights)))
    data = read_pkl(str(path))
    assert sorted(data["model"]) == ["a_w", "b"]
    assert torch.equal(data["model"]["a_w"], torch.arange(3.0)) and data["model"]["b"].dtype == torch.float64
    assert {k: v for k, v in data.items() if k != "model"} == extras


def test_read_pkl_refuses_non_arrays(tmp_path):
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"model": {"a": [1.0, 2.0]}}))
    with pytest.raises(ValueError, match=r"w.pkl: weight 'a' is a list"):
        read_pkl(str(path))


def test_model_zoo_pkl_loads_into_mask_rcnn_r50_fpn(tmp_path):
    """(a) A detectron2 model-zoo file: plain pickle + numpy, detectron2 names plus stale keys."""
    src = build(*R50, seed=1).state_dict()
    zoo = to_detectron2_zoo_layout(src, author="Detectron2 Model Zoo")
    zoo["model"]["pixel_mean"] = np.array([[[103.53]], [[116.28]], [[123.675]]], dtype=np.float32)
    zoo["model"]["pixel_std"] = np.ones((3, 1, 1), dtype=np.float32)
    for level in range(5):
        zoo["model"][f"proposal_generator.anchor_generator.cell_anchors.{level}"] = np.zeros((3, 4), np.float32)
    assert zoo["matching_heuristics"] is False
    path = tmp_path / "model_final_f10217.pkl"
    path.write_bytes(pickle.dumps(zoo))

    ckpt = Checkpointer(build(*R50, seed=2))
    rest = ckpt.load(str(path))
    report = ckpt.last_report
    assert rest == {"__author__": "Detectron2 Model Zoo", "matching_heuristics": False}
    assert report.source == SAME_NAMES
    assert report.missing == () and report.unexpected == () and report.wrong_shape == ()
    assert report.loaded == report.total == len(src)
    assert all(torch.equal(v, src[k]) for k, v in ckpt.model.state_dict().items())


@pytest.mark.parametrize("with_stats", [False, True], ids=["affine_channel", "batch_norm_stats"])
def test_caffe2_imagenet_backbone_loads_into_the_resnet(tmp_path, with_stats):
    """(b) An MSRA-style R-50.pkl: Caffe2 names (ours inverted by rule), fc1000 and momenta extras."""
    model = build(*R50, seed=0)
    prefix = "backbone.bottom_up."
    resnet_keys = [k[len(prefix):] for k in model.state_dict() if k.startswith(prefix)]
    torch.manual_seed(5)
    c2 = {}
    for k in resnet_keys:
        if not with_stats and k.endswith(("running_mean", "running_var")):
            continue  # MSRA files have affine-channel norms: scale and bias only
        c2[caffe2_name(k)] = torch.rand(model.state_dict()[prefix + k].shape).numpy()
    c2.update({"fc1000_w": np.zeros((1000, 2048), np.float32), "fc1000_b": np.zeros(1000, np.float32)})
    c2.update({f"{name}_momentum": np.zeros(1, np.float32) for name in list(c2)[:10]})
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(c2, protocol=2))

    ckpt = Checkpointer(model)
    ckpt.load(str(path))
    report = ckpt.last_report
    assert report.source == "Caffe2/MSRA ImageNet backbone"
    assert not [k for k in report.missing if k.startswith(prefix)]
    assert report.unexpected == () and report.wrong_shape == () and report.conflicts == ()
    assert any(k.startswith("roi_heads.") for k in report.missing)  # the heads keep their initialisation
    state = model.state_dict()
    for k in resnet_keys:
        if with_stats or not k.endswith(("running_mean", "running_var")):
            assert torch.equal(state[prefix + k], torch.from_numpy(c2[caffe2_name(k)])), k
        else:  # FrozenBN fills identity statistics for files without them
            expected = torch.zeros_like(state[prefix + k]) if k.endswith("mean") else torch.ones_like(state[prefix + k])
            assert torch.equal(state[prefix + k], expected), k
    assert load_checkpoint_file(str(path))["model"].keys() == {k for k in c2 if not k.endswith("_momentum")}
