from pathlib import Path

from framework.config.listing import describe, describe_plugin_configs, main, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "components.md"


def test_components_doc_is_generated_from_the_registries():
    expected = render_markdown(describe(), describe_plugin_configs())
    assert DOC.read_text() == expected, (
        "docs/components.md is out of date: run `python tools/list_components.py --format markdown > docs/components.md`"
    )


def test_listing_shows_groups_knobs_and_defaults(capsys):
    assert main(["--registry", "rpn_heads"]) == 0
    out = capsys.readouterr().out
    assert "config groups: model/rpn/head" in out
    assert "StandardRPNHead" in out and "conv_dims: Sequence[int] = [-1]" in out


def test_every_builtin_registry_is_listed():
    names = {r["registry"] for r in describe()}
    assert {"BACKBONES", "ANCHOR_GENERATORS", "PROPOSAL_GENERATORS", "RPN_HEADS", "ROI_HEADS",
            "BOX_HEADS", "MASK_HEADS", "ROI_POOLERS", "META_ARCHITECTURES"} <= names


def test_augmentations_and_samplers_are_listed_with_where_they_sit(capsys):
    assert main(["--registry", "AUGMENTATIONS"]) == 0
    out = capsys.readouterr().out
    assert "held by: knob augmentations of config section mapper (a list, in order)" in out
    assert "ResizeShortestEdge" in out and "short_edge_length: Sequence[int] = [800]" in out
    assert main(["--registry", "TRAIN_SAMPLERS"]) == 0
    out = capsys.readouterr().out
    assert "config groups: train_sampler" in out and "knob sampler of config section train_loader" in out
    assert "repeat_thresh: float = (required)" in out


def test_unknown_registry_suggests(capsys):
    assert main(["--registry", "MASK_HEAD"]) == 2
    assert "Did you mean 'MASK_HEADS'" in capsys.readouterr().err
