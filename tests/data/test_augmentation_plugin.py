"""An augmentation written outside the repository, in one file of an installed package, added to the
training pipeline from the command line: composed, checked, trained a few iterations and evaluated."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from framework.config import plugins
from framework.config.compose import compose
from framework.engine.builders import build_mapper
from framework.engine.run import run
from framework.errors import ConfigError
from framework.registry import AUGMENTATIONS
from tiny_job import first_test_images, tiny_job

PLUGIN = '''
"""A photometric augmentation on torchvision's functional: the whole plugin."""
import dataclasses

import torch
from torchvision.transforms.v2 import functional as F

from framework.data.augmentations import AugSample, Augmentation
from framework.registry import AUGMENTATIONS


@AUGMENTATIONS.register()
class RandomGrayscale(Augmentation):
    """The image in grey levels (3 equal channels) with probability ``prob``; the objects are unchanged."""

    def __init__(self, *, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, sample: AugSample) -> AugSample:
        if torch.rand(()).item() >= self.prob:
            return sample
        return dataclasses.replace(sample, image=F.rgb_to_grayscale(sample.image, num_output_channels=3))
'''

PIPELINE = ("input.train.augmentations=[{name: ResizeShortestEdge, short_edge_length: [128], max_size: 192}, "
            "RandomHorizontalFlip, {name: RandomGrayscale, prob: 1.0}]")


@pytest.fixture
def grayscale_plugin(tmp_path, installed_plugin):
    (tmp_path / "grayscale_aug.py").write_text(textwrap.dedent(PLUGIN))
    installed_plugin("grayscale_aug", "grayscale_aug")
    try:
        assert plugins.discover_plugins()["grayscale_aug"] == "entry point grayscale_aug"
        yield
    finally:
        AUGMENTATIONS._obj_map.pop("RandomGrayscale", None)
        plugins._loaded.pop("grayscale_aug", None)
        sys.modules.pop("grayscale_aug", None)


@pytest.mark.slow
def test_an_installed_augmentation_is_added_from_the_command_line_and_trains(tmp_path, grayscale_plugin):
    overrides = [PIPELINE, *tiny_job(2), *first_test_images(4)]
    cfg = compose(overrides)
    augmentations = cfg.input.train.augmentations
    assert augmentations[1] == "RandomHorizontalFlip" and augmentations[2].name == "RandomGrayscale"
    assert list(augmentations[0].short_edge_length) == [128]
    from framework.data import get_dataset

    image = build_mapper(cfg, "train")(get_dataset("synthetic_train")[0])["image"]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey

    with pytest.raises(ConfigError, match=r"input\.train\.augmentations\.2\.probability.*Did you mean 'prob'"):
        compose([PIPELINE.replace("prob: 1.0", "probability: 1.0")])
    with pytest.raises(ConfigError, match=r"input\.train\.augmentations\.2\.name.*Did you mean 'RandomGrayscale'"):
        compose([PIPELINE.replace("RandomGrayscale", "RandomGreyscale")])

    run(cfg, output_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and "bbox/AP" in metrics and "segm/AP" in metrics
