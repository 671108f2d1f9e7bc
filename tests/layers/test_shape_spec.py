import pytest

from framework.errors import ConfigError
from framework.layers import ShapeSpec, check_feature_names
from framework.registry import PROPOSAL_GENERATORS

SHAPES = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 7)}


def test_check_feature_names_passes_known_names_through():
    assert check_feature_names(("p2", "p3"), SHAPES, knob="X.in_features") == ["p2", "p3"]


def test_unknown_and_empty_feature_names():
    with pytest.raises(ConfigError, match=r"X\.in_features has 'p7'.*Did you mean.*Available: \['p2'"):
        check_feature_names(["p2", "p7"], SHAPES, knob="X.in_features")
    with pytest.raises(ConfigError, match=r"X\.in_features is empty.*\(add more\)"):
        check_feature_names([], SHAPES, knob="X.in_features", hint="add more")


def test_rpn_reports_a_typo_in_in_features():
    with pytest.raises(ConfigError, match=r"RPN\.in_features has 'p22'.*Did you mean 'p2'"):
        PROPOSAL_GENERATORS.build({"name": "RPN", "in_features": ["p22"]}, input_shape=SHAPES)
