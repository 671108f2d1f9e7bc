"""The experiment=zoo_* presets compose to detectron2's model-zoo settings (so its weights evaluate as there)."""

from __future__ import annotations

import pytest
import torch

from framework.config.compose import compose
from framework.engine.optim import get_default_param_groups

PRESETS = {
    # name: (mask head, depth, max_iter, steps)
    "zoo_mask_rcnn_R_50_FPN_1x": (True, 50, 90000, [60000, 80000]),
    "zoo_mask_rcnn_R_50_FPN_3x": (True, 50, 270000, [210000, 250000]),
    "zoo_mask_rcnn_R_101_FPN_3x": (True, 101, 270000, [210000, 250000]),
    "zoo_faster_rcnn_R_50_FPN_1x": (False, 50, 90000, [60000, 80000]),
    "zoo_faster_rcnn_R_50_FPN_3x": (False, 50, 270000, [210000, 250000]),
    "zoo_faster_rcnn_R_101_FPN_3x": (False, 101, 270000, [210000, 250000]),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_zoo_preset_has_detectron2_settings(preset):
    mask_on, depth, max_iter, steps = PRESETS[preset]
    cfg = compose([f"experiment={preset}", "weights=/path/model_final.pkl", "eval_only=true"])
    model = cfg.model
    assert (model.roi_heads.get("mask_head") is not None) == mask_on
    resnet = model.backbone.bottom_up
    assert (model.backbone.name, resnet.name, resnet.depth) == ("FPN", "ResNet", depth)
    assert resnet.stride_in_1x1 is True and resnet.norm == "FrozenBN" and resnet.freeze_at == 2
    assert model.input_format == "BGR" and list(model.pixel_std) == [1.0, 1.0, 1.0]
    assert list(model.pixel_mean) == [103.53, 116.28, 123.675]
    assert model.roi_heads.num_classes == 80 and cfg.dataset.test.name == "coco_2017_val"
    poolers = [model.roi_heads.box_pooler] + ([model.roi_heads.mask_pooler] if mask_on else [])
    assert all(p.name == "ROIAlignV2" and p.sampling_ratio == 0 for p in poolers)
    train_resize, test_resize = cfg.input.train.augmentations[0], cfg.input.test.augmentations[0]
    assert (test_resize.name, list(test_resize.short_edge_length), test_resize.max_size) == ("ResizeShortestEdge", [800], 1333)
    assert cfg.input.test.image_format == "BGR" and len(cfg.input.test.augmentations) == 1
    assert list(train_resize.short_edge_length) == [640, 672, 704, 736, 768, 800] and train_resize.max_size == 1333
    assert [a.name for a in cfg.input.train.augmentations] == ["ResizeShortestEdge", "RandomHorizontalFlip"]
    solver = cfg.solver
    assert (solver.name, solver.base_lr, solver.momentum, solver.nesterov) == ("SGD", 0.02, 0.9, False)
    assert solver.weight_decay == 1e-4 and solver.weight_decay_norm == 0.0
    assert solver.weight_decay_bias is None  # = weight_decay, as detectron2's WEIGHT_DECAY_BIAS=None
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.train.max_iter == max_iter and list(cfg.lr_scheduler.steps) == steps
    sched = cfg.lr_scheduler
    assert (sched.name, sched.gamma, sched.warmup_iters, sched.warmup_factor) == ("WarmupMultiStepLR", 0.1, 1000, 0.001)
    assert cfg.weights == "/path/model_final.pkl" and cfg.eval_only is True


def test_zoo_solver_decays_biases_like_detectron2():
    """Biases of non-norm layers get weight_decay, norm layers none (FrozenBN trains none anyway)."""
    cfg = compose(["experiment=zoo_mask_rcnn_R_50_FPN_3x"])
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.GroupNorm(1, 2))
    groups = get_default_param_groups(
        model,
        base_lr=cfg.solver.base_lr,
        weight_decay=cfg.solver.weight_decay,
        weight_decay_norm=cfg.solver.weight_decay_norm,
        weight_decay_bias=cfg.solver.weight_decay_bias,
    )
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    conv, norm = model
    assert decay[id(conv.weight)] == decay[id(conv.bias)] == 1e-4
    assert decay[id(norm.weight)] == decay[id(norm.bias)] == 0.0
