from typing import Any, List, Literal, Optional, Sequence

from omegaconf import OmegaConf

from framework.config.schema import omegaconf_type, schema_for
from framework.modeling.roi_heads import StandardROIHeads


def test_type_mapping():
    assert omegaconf_type(int) is int
    assert omegaconf_type(Sequence[float]) == List[float]
    assert omegaconf_type(tuple[int, ...]) == List[int]
    assert omegaconf_type(Optional[int]) == Optional[int]
    assert omegaconf_type(Literal["a", "b"]) is str
    # nested lists stay loose: OmegaConf 2.3 rejects ints in List[List[float]]
    assert omegaconf_type(Sequence[Sequence[float]]) == List[Any]


def test_schema_has_signature_defaults_and_hydra_defaults_list():
    cfg = OmegaConf.structured(schema_for(StandardROIHeads, "StandardROIHeads"))
    assert cfg.name == "StandardROIHeads"
    assert cfg.batch_size_per_image == 512 and cfg.positive_fraction == 0.25
    assert cfg.mask_head is None and "bbox_reg_weights" not in cfg  # the box predictor's knob, not its parent's
    # nested components are chosen by config groups, named after the knob
    assert {"box_head": "FastRCNNConvFCHead"} in list(cfg.defaults)
    assert {"box_predictor": "FastRCNNOutputLayers"} in list(cfg.defaults)
    assert {"mask_head": None} in list(cfg.defaults)
