"""torchvision ImageNet ResNets load into our ResNet (inside a detector) and give the same features:
bit for bit once torchvision's BatchNorms are fused into its convolutions as ours are."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from framework.checkpoint import Checkpointer
from framework.checkpoint.torchvision import convert_torchvision_classifier, torchvision_resnet_to_framework
from framework.config.compose import compose
from framework.registry import META_ARCHITECTURES
from fused_torchvision import fuse_resnet_batchnorms

# torchvision builder -> our ResNet knobs for the same network
ARCHS = {
    "resnet18": ["depth=18", "res2_out_channels=64"],
    "resnet50": ["depth=50"],
    "resnext50_32x4d": ["depth=50", "num_groups=32", "width_per_group=4"],
}


def _calibrated(builder: str) -> torch.nn.Module:
    """A randomly initialised classifier whose BatchNorm statistics are those of random images, so
    that features stay finite and informative through all the stages."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 96, 128))
    return model.eval()


@pytest.mark.parametrize("builder", list(ARCHS))
def test_classifier_weights_give_the_same_features(builder, tmp_path):
    tv = _calibrated(builder)
    path = tmp_path / f"{builder}.pth"
    torch.save(tv.state_dict(), path)

    knobs = [f"model.backbone.bottom_up.{k}" for k in ARCHS[builder]]
    cfg = compose(["model=mask_rcnn_R_50_FPN_torchvision", "model.roi_heads.num_classes=3",
                   "model.backbone.bottom_up.norm_eps=1e-5", *knobs])
    model = META_ARCHITECTURES.build(cfg.model, path="model").eval()
    Checkpointer(model).load(str(path))

    x = torch.randn(1, 3, 96, 128)
    expected = create_feature_extractor(tv, {f"layer{i}": f"res{i + 1}" for i in range(1, 5)})(x)
    with torch.no_grad():
        ours = model.backbone.bottom_up(x)
    for name, value in expected.items():
        scale = value.abs().max().item()  # random weights calibrated on noise: rounding is amplified
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-3 * scale, msg=lambda m: f"{builder} {name}: {m}")
    # Our convolutions fold their frozen norms in, as torch's conv-BN fuser does; with torchvision's
    # BatchNorms fused the same way, the features are the same bit for bit.
    fused = create_feature_extractor(fuse_resnet_batchnorms(tv), {f"layer{i}": f"res{i + 1}" for i in range(1, 5)})(x)
    for name, value in fused.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0, msg=lambda m: f"{builder} {name}: {m}")



def test_classifier_head_and_counters_are_dropped():
    sd = torchvision.models.resnet18(weights=None).state_dict()
    out = convert_torchvision_classifier(sd)
    assert not any(k.startswith("fc") or k.endswith("num_batches_tracked") for k in out)
    assert out["res3.0.shortcut.norm.running_var"] is sd["layer2.0.downsample.1.running_var"]
    assert torchvision_resnet_to_framework("layer4.2.bn3.weight") == "res5.2.conv3.norm.weight"
    assert torchvision_resnet_to_framework("bn1.bias") == "stem.conv1.norm.bias"
    with pytest.raises(KeyError, match="not a torchvision ResNet parameter name"):
        torchvision_resnet_to_framework("layer1.0.se.fc1.weight")
