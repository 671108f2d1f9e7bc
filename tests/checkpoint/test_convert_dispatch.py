"""convert_to_framework: which format a state dict is in, and where backbone-only weights go."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ckpt_helpers import build, caffe2_name

from framework.checkpoint.convert import SAME_NAMES, convert_to_framework, resnet_prefix

QUICK = "model=mask_rcnn_R_18_FPN_quick"


@pytest.fixture(scope="module")
def model_state():
    return build(QUICK).state_dict()


@pytest.mark.parametrize(
    "keys, prefix",
    [
        (["backbone.bottom_up.stem.conv1.weight", "backbone.fpn_lateral2.weight"], "backbone.bottom_up."),
        (["backbone.stem.conv1.weight", "backbone.res2.0.conv1.weight"], "backbone."),
        (["stem.conv1.weight", "res2.0.conv1.weight"], ""),
    ],
)
def test_resnet_prefix(keys, prefix):
    assert resnet_prefix(keys) == prefix


@pytest.mark.parametrize("keys, found", [(["head.weight"], "none"), (["a.stem.conv1.weight", "b.stem.conv1.weight"], "'a.', 'b.'")])
def test_resnet_prefix_needs_exactly_one_resnet(keys, found):
    with pytest.raises(ValueError, match=f"exactly one ResNet.*found {found}"):
        resnet_prefix(keys)


def test_our_names_are_returned_untouched(model_state):
    sd = dict(model_state)
    out, source = convert_to_framework(sd, model_state)
    assert out is sd and source == SAME_NAMES


def test_ddp_prefix_and_numpy_arrays(model_state):
    sd = {f"module.{k}": v.numpy() for k, v in model_state.items()}
    out, source = convert_to_framework(sd, model_state)
    assert source == SAME_NAMES and out.keys() == model_state.keys()
    assert all(isinstance(v, torch.Tensor) and torch.equal(v, model_state[k]) for k, v in out.items())


def test_caffe2_backbone_goes_under_the_resnet_prefix(model_state):
    resnet = {k[len("backbone.bottom_up."):]: v for k, v in model_state.items() if k.startswith("backbone.bottom_up.")}
    c2 = {caffe2_name(k): v for k, v in resnet.items() if not k.endswith("num_batches_tracked")}
    out, source = convert_to_framework({**c2, "fc1000_w": torch.zeros(2)}, model_state)
    assert source == "Caffe2/MSRA ImageNet backbone"
    assert out.keys() == {f"backbone.bottom_up.{k}" for k in resnet if not k.endswith("num_batches_tracked")}


def test_resnet_with_our_names_goes_under_the_prefix(model_state):
    # detectron2's tools/convert-torchvision-to-d2.py output: ResNet names, the classifier as stem.fc
    sd = {"stem.conv1.weight": np.zeros((32, 3, 7, 7), np.float32), "stem.fc.weight": np.zeros((1000, 256), np.float32)}
    out, source = convert_to_framework(sd, model_state)
    assert source == "ResNet backbone (detectron2 names)" and list(out) == ["backbone.bottom_up.stem.conv1.weight"]


def test_torchvision_classifier_goes_under_the_prefix(model_state):
    torchvision = pytest.importorskip("torchvision")
    sd = torchvision.models.resnet18(weights=None).state_dict()
    out, source = convert_to_framework(sd, model_state)
    assert source == "torchvision ImageNet classifier"
    assert out and all(k in model_state for k in out)
    assert "backbone.bottom_up.res5.1.conv2.norm.running_var" in out and not any(".fc." in k for k in out)


def test_a_backbone_file_for_a_model_without_resnet():
    with pytest.raises(ValueError, match="cannot place ResNet backbone weights"):
        convert_to_framework({"conv1_w": torch.zeros(1)}, {"head.weight": torch.zeros(1)})
