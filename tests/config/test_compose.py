"""Composing configs with Hydra's Compose API: groups, overrides, and errors with did-you-mean."""

import pytest

from framework.config.compose import check_command_line, compose
from framework.errors import ConfigError
from framework.registry import META_ARCHITECTURES


def test_a_mapping_knob_that_defaults_to_null_is_set_from_the_command_line():
    # Optional[dict] knobs (here the torchvision backbone plugin's builder_kwargs) take a mapping
    cfg = compose(["model/backbone=FPN_tv_resnet18_quick",
                   "model.backbone.bottom_up.builder_kwargs={zero_init_residual: true}"])
    assert dict(cfg.model.backbone.bottom_up.builder_kwargs) == {"zero_init_residual": True}


def test_default_job_is_the_quick_cpu_config():
    cfg = compose([])
    assert cfg.model.backbone.bottom_up.depth == 18
    assert cfg.dataset.train.name == "synthetic_train"
    assert cfg.model.roi_heads.num_classes == cfg.dataset.num_classes == 4
    assert (cfg.solver.name, cfg.solver.base_lr, cfg.solver.weight_decay_bias) == ("AdamW", 0.001, 0.0)
    assert cfg.lr_scheduler.name == "WarmupMultiStepLR" and list(cfg.lr_scheduler.steps) == [450, 550]
    assert "max_iter" not in cfg.lr_scheduler  # the schedule always spans the trainer's max_iter
    assert set(cfg.evaluators) == {"coco"} and set(cfg.loggers) == {"console", "json", "tensorboard"}


def test_solver_schedule_evaluator_and_logger_are_component_groups():
    cfg = compose(["solver=SGD", "lr_scheduler=WarmupCosineLR", "+logger@loggers.mlflow=MLflowWriter",
                   "loggers.tensorboard=null", "evaluators.coco.tasks=[bbox]"])
    # a chosen component gets its own defaults, not the default job's AdamW values
    assert (cfg.solver.name, cfg.solver.base_lr, cfg.solver.weight_decay, cfg.solver.weight_decay_bias) == (
        "SGD", 0.02, 1e-4, None)
    assert cfg.lr_scheduler.name == "WarmupCosineLR" and cfg.lr_scheduler.warmup_iters == 1000
    assert cfg.loggers.mlflow.name == "MLflowWriter" and cfg.loggers.tensorboard is None
    assert list(cfg.evaluators.coco.tasks) == ["bbox"]
    with pytest.raises(ConfigError, match="Did you mean 'AdamW'"):
        compose(["solver=AdamV"])
    with pytest.raises(ConfigError, match="betas"):
        compose(["solver=SGD", "solver.betas=[0.9,0.99]"])  # an AdamW knob on SGD
    with pytest.raises(ConfigError, match="Did you mean 'WandbWriter'"):
        compose(["+logger@loggers.wandb=WandWriter"])


def test_mask_rcnn_r50_fpn_has_detectron2_defaults():
    cfg = compose(["model=mask_rcnn_R_50_FPN", "dataset=coco"])
    m = cfg.model
    assert m.roi_heads.num_classes == 80
    assert m.name == "GeneralizedRCNN"
    assert m.backbone.name == "FPN" and m.backbone.bottom_up.name == "ResNet" and m.backbone.bottom_up.depth == 50
    assert m.rpn.nms_thresh == 0.7 and m.rpn.post_nms_topk_train == 1000
    assert list(m.rpn.anchor_generator.sizes) == [[32], [64], [128], [256], [512]]
    assert m.roi_heads.mask_head.name == "MaskRCNNConvUpsampleHead"
    assert m.roi_heads.box_pooler.name == m.roi_heads.mask_pooler.name == "ROIAlignV2"


def test_faster_rcnn_has_no_mask_head():
    assert compose(["model=faster_rcnn_R_50_FPN"]).model.roi_heads.mask_head is None


def test_preset_values_and_knob_overrides():
    cfg = compose(["model=mask_rcnn_R_101_FPN", "model.rpn.nms_thresh=0.6"])
    assert cfg.model.backbone.bottom_up.depth == 101
    assert cfg.model.rpn.nms_thresh == 0.6


@pytest.mark.parametrize("pooler", ["ROIPool", "ROIAlign", "ROIAlignV2"])
def test_roi_pooler_group_switches_both_branches(pooler):
    heads = compose([f"model/roi_pooler={pooler}"]).model.roi_heads
    assert heads.box_pooler.name == heads.mask_pooler.name == pooler
    assert ("sampling_ratio" in heads.box_pooler) == (pooler != "ROIPool")


def test_single_branch_group_and_nested_group():
    cfg = compose(["model/roi_heads/box_pooler=ROIPool", "model/backbone/bottom_up=ResNet"])
    assert cfg.model.roi_heads.box_pooler.name == "ROIPool"
    assert cfg.model.roi_heads.mask_pooler.name == "ROIAlignV2"


def test_plugin_from_projects_is_a_group_option():
    cfg = compose(["model/roi_heads/mask_head=LiteMaskHead", "model.roi_heads.mask_head.conv_dim=32"])
    assert cfg.model.roi_heads.mask_head.name == "LiteMaskHead"
    assert cfg.model.roi_heads.mask_head.conv_dim == 32


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.rpn.nms_thres=0.6", r"Did you mean 'nms_thresh'\?"),
        ("model.rpn.nms_thresh=abc", r"could not be converted to Float[\s\S]*model\.rpn\.nms_thresh"),
        ("model=mask_rcnn_R50_FPN", r"Did you mean 'mask_rcnn_R_50_FPN'"),
        ("model/roi_pooler=ROIAlgn", r"Did you mean 'ROIAlign'"),
        ("model/roi_heads/mask_hed=LiteMaskHead", r"Did you mean 'model/roi_heads/mask_head'\?"),
        ("model.backbone.bottom_up.name=ResNt", r"model\.backbone\.bottom_up\.name.*Did you mean 'ResNet'\?"),
        ("model.backbone.bottom_up.norm=FrozenBNN", r"model\.backbone\.bottom_up\.norm.*Did you mean 'FrozenBN'\?"),
        ("solver.base_lrr=0.1", r"Did you mean 'base_lr'\?"),
        ("hooks.checkpointer.perod=5", r"Did you mean 'period'\?"),
        ("hooks.writer.name=PeriodicWritr", r"HOOKS has no component named 'PeriodicWritr'.*Did you mean 'PeriodicWriter'"),
        ("dataset=cocoo", r"Did you mean 'coco'"),
        ("input.train.augmentations.1.name=RandomHorizontalFlp",
         r"AUGMENTATIONS has no component named 'RandomHorizontalFlp' \(at config path 'input\.train\.augmentations\.1\.name'\)"
         r"\. Did you mean 'RandomHorizontalFlip'\?"),
        ("+input.train.augmentations.1.prb=0.3", r"input\.train\.augmentations\.1\.prb'.*Did you mean 'prob'\?"),
        ("input.train.augmentations.0.max_sze=3", r"Did you mean 'max_size'\? Keys under 'input\.train\.augmentations\.0'"),
        ("input.test.augmentations=[ResizeShortestEdge,Flip]", r"'Flip' \(at config path 'input\.test\.augmentations\.1\.name'\)"),
        ("train_sampler@dataloader.train.sampler=RepeatFactorSampler", r"Did you mean 'RepeatFactorTrainingSampler'"),
        ("dataloader.train.sampler.shufle=false", r"Did you mean 'shuffle'\?"),
        ("dataloader.train.sampler.name=TrainingSamplr", r"dataloader\.train\.sampler\.name.*Did you mean 'TrainingSampler'"),
    ],
)
def test_typos_fail_at_compose_time_with_suggestions(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def test_the_pipelines_and_the_sampler_are_components_in_sections():
    cfg = compose([])
    train, test = cfg.input.train.augmentations, cfg.input.test.augmentations
    assert [a.name for a in train] == ["ResizeShortestEdge", "RandomHorizontalFlip"]
    assert list(train[0].short_edge_length) == [192, 224, 256] and train[0].max_size == 400
    assert [a.name for a in test] == ["ResizeShortestEdge"] and list(test[0].short_edge_length) == [224]
    assert dict(cfg.dataloader.train.sampler) == {"name": "TrainingSampler", "shuffle": True}  # its schema's defaults
    cfg = compose(["train_sampler@dataloader.train.sampler=RepeatFactorTrainingSampler",
                   "dataloader.train.sampler.repeat_thresh=0.001", "input.train.augmentations.0.max_size=500",
                   "+input.train.augmentations.1.prob=0.25"])
    assert dict(cfg.dataloader.train.sampler) == {"name": "RepeatFactorTrainingSampler", "repeat_thresh": 0.001,
                                                  "shuffle": True}
    assert cfg.input.train.augmentations[0].max_size == 500 and cfg.input.train.augmentations[1].prob == 0.25
    with pytest.raises(ConfigError, match=r"dataloader\.train\.sampler\.repeat_thresh': required value"):
        compose(["train_sampler@dataloader.train.sampler=RepeatFactorTrainingSampler"])


def test_sweeps_are_checked_value_by_value():
    check_command_line(["model.rpn.nms_thresh=0.6,0.7", "model/roi_pooler=ROIAlign,ROIAlignV2"])
    with pytest.raises(ConfigError, match=r"Did you mean 'ROIAlignV2'"):
        check_command_line(["model/roi_pooler=ROIAlign,ROIAlignV3"])


def test_sweeps_the_sweeper_draws_are_not_expanded_but_their_keys_are_checked():
    # interval (and tagged) sweeps are for sweepers such as Optuna: only the key is checked
    check_command_line(["solver.base_lr=interval(0.0001,0.01)", "solver.weight_decay=tag(log, interval(1e-5,1e-2))"])
    with pytest.raises(ConfigError, match=r"sweep over 'solver.base_lre': no such key. Did you mean 'base_lr'"):
        check_command_line(["solver.base_lre=interval(0.0001,0.01)"])


def test_glob_sweeps_are_expanded_over_the_group_options():
    check_command_line(["model/roi_heads/mask_head=glob(*)", "model/roi_pooler=glob(ROIAlign*)"])
    with pytest.raises(ConfigError, match="matches no option of group 'model/roi_heads/mask_head'"):
        check_command_line(["model/roi_heads/mask_head=glob(Nope*)"])


def test_hooks_are_a_dict_keyed_by_name():
    cfg = compose(["hooks.checkpointer.period=7", "hooks.visualizer=null", "hooks.writer.priority=LOW"])
    assert cfg.hooks.checkpointer.period == 7
    assert cfg.hooks.visualizer is None
    assert cfg.hooks.writer.priority == "LOW"
    added = compose(["+hook@hooks.extra_timer=IterationTimer"])
    assert added.hooks.extra_timer.name == "IterationTimer"


def test_composed_faster_rcnn_builds():
    cfg = compose(["model=faster_rcnn_R_50_FPN", "model.backbone.bottom_up.depth=18",
                   "model.backbone.bottom_up.res2_out_channels=64"])
    model = META_ARCHITECTURES.build(cfg.model, path="model")
    assert not model.roi_heads.mask_on
    assert model.proposal_generator.nms_thresh == 0.7


def test_a_user_config_folder_adds_presets(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_preset.yaml").write_text(
        "defaults:\n  - mask_rcnn_R_50_FPN\n  - override roi_heads/mask_head: LiteMaskHead\n  - _self_\n"
        "rpn:\n  nms_thresh: 0.65\n"
    )
    cfg = compose(["model=my_preset"], search_path=[tmp_path])
    assert cfg.model.roi_heads.mask_head.name == "LiteMaskHead" and cfg.model.rpn.nms_thresh == 0.65
    check_command_line(["model=my_preset,mask_rcnn_R_50_FPN"], search_path=[tmp_path])
    # a glob sweep sees the folder's options too (the sweep is checked value by value)
    (tmp_path / "model" / "my_broken.yaml").write_text("defaults:\n  - mask_rcnn_R_50_FPN\n  - _self_\nrpn:\n  nms_threshh: 1\n")
    with pytest.raises(ConfigError, match="nms_threshh"):
        check_command_line(["model=glob(my_*)"], search_path=[tmp_path])
    with pytest.raises(ConfigError, match="model/my_preset"):
        compose(["model=my_preset"])  # not found without the folder
    with pytest.raises(ConfigError, match="config folder .*nope.* not found"):
        compose([], search_path=[tmp_path / "nope"])


def test_an_option_of_a_missing_extra_says_which_extra_installs_it():
    from framework.config.compose import _explain

    # What Hydra says when hydra/launcher=slurm is chosen without hydra-submitit-launcher installed.
    error = Exception("In 'hydra/launcher/slurm': Could not find 'hydra/launcher/submitit_slurm'\n\n"
                      "Available options in 'hydra/launcher':\n\tbasic\n\tslurm\n\tslurm_local\n")
    assert 'pip install "framework[slurm]"' in _explain(error, ["hydra/launcher=slurm"], "train")


def test_launcher_presets_compose():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    check_command_line(["hydra/launcher=slurm", "hydra.launcher.nodes=2", "hydra.launcher.partition=gpu"])
    with pytest.raises(ConfigError, match="Did you mean 'partition'"):
        check_command_line(["hydra/launcher=slurm", "hydra.launcher.partiton=gpu"])
    check_command_line(["hydra/launcher=slurm_local", "hydra.launcher.tasks_per_node=2"])
