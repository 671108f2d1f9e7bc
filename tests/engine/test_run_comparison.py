"""Comparing runs: grouping by config without the seed, mean +- sample std, the spread rule, the
reports, the sweep summary's pooled table, and malformed inputs (fabricated run directories of
tests/fake_runs.py, whose numbers are worked out by hand in its docstring)."""

from __future__ import annotations

import json
import re
import math

import numpy as np
import pytest
from PIL import Image

from fake_runs import make_run, two_variant_sweep
from framework.engine.comparison_report import comparison_markdown, write_comparison
from framework.engine.run_comparison import (
    RunComparisonError,
    Stat,
    compare_groups,
    exceeds_spread,
    find_runs,
    group_runs,
    read_run,
)
from framework.engine.sweep_summary import write_summary


def test_stat_is_mean_and_sample_std():
    s = Stat.of([60.0, 62.0, 64.0])
    assert (s.n, s.mean, s.std) == (3, 62.0, 2.0)  # sqrt((4 + 0 + 4) / 2)
    one = Stat.of([5.0])
    assert one.mean == 5.0 and math.isnan(one.std)
    assert Stat.of([]).n == 0 and math.isnan(Stat.of([]).mean)


def test_exceeds_spread_rule():
    a, b = Stat.of([60.0, 62.0, 64.0]), Stat.of([66.0, 67.0, 68.0])
    assert exceeds_spread(a, b) is True  # 5 > 2 + 1
    assert exceeds_spread(a, Stat.of([64.0, 65.0, 66.0])) is False  # 3 > 3 is false: within
    assert exceeds_spread(a, Stat.of([70.0])) is None  # one run: not judged


def test_rule_false_alarm_rate_with_three_seeds():
    # The rate docs/evaluation.md quotes: two groups of 3 draws of the same normal distribution.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3))
    called = np.abs(b.mean(1) - a.mean(1)) > a.std(1, ddof=1) + b.std(1, ddof=1)
    assert 0.075 < called.mean() < 0.090


def test_read_run_drops_the_seed_from_the_config(tmp_path):
    run = read_run(make_run(tmp_path / "r", seed=7, head="X", metrics={"segm/AP": 1.0}))
    assert run.seed == 7 and run.metrics == {"segm/AP": 1.0}  # "iteration" is not a metric
    assert "seed" not in run.config and "dataloader.train.seed" not in run.config and "resume" not in run.config
    assert run.config["model.roi_heads.mask_head.name"] == "X"
    assert run.overrides == ("model/roi_heads/mask_head=X",)
    # Without .hydra/ the resolved config.yaml is used; dataloader.train.seed (= seed) is dropped too.
    plain = read_run(make_run(tmp_path / "p", seed=7, head="X", metrics={"segm/AP": 1.0}, with_hydra=False))
    assert plain.config == run.config and plain.seed == 7


def test_groups_stats_and_differences_of_a_two_variant_sweep(tmp_path):
    runs, notes = find_runs([two_variant_sweep(tmp_path / "sweep")])
    assert notes == [] and len(runs) == 6
    groups = group_runs(runs)
    assert [(g.key, g.label, g.seeds) for g in groups] == [
        ("A", "model/roi_heads/mask_head=X", [1, 2, 3]), ("B", "model/roi_heads/mask_head=Y", [1, 2, 3])]
    c = compare_groups(runs)
    expected = {  # metric: (mean A, std A, mean B, std B, delta, exceeds)
        "segm/AP": (62, 2, 67, 1, 5, True), "bbox/AP": (51, 1, 52, 1, 1, False),
        "segm/AP-disk": (20, 10, 50, 10, 30, True), "segm/dAP-cls": (5, 0, 5, 0, 0, False),
        "segm/dAP-miss": (4, 1, 1, 0, -3, True),
    }
    assert c.metrics == ["segm/AP", "bbox/AP", "segm/AP-disk", "segm/dAP-cls", "segm/dAP-miss"]
    diffs = {d.metric: d for d in c.differences["B"]}
    for m, (ma, sa, mb, sb, delta, exceeds) in expected.items():
        assert (c.stats["A"][m].mean, c.stats["A"][m].std) == pytest.approx((ma, sa), abs=1e-12), m
        assert (c.stats["B"][m].mean, c.stats["B"][m].std) == pytest.approx((mb, sb), abs=1e-12), m
        assert diffs[m].delta == pytest.approx(delta, abs=1e-12) and diffs[m].exceeds is exceeds, m
    # Baseline B: the differences flip sign, the verdicts stay.
    flipped = {d.metric: d for d in compare_groups(runs, baseline=1).differences["A"]}
    assert flipped["segm/AP"].delta == pytest.approx(-5) and flipped["segm/AP"].exceeds is True


def test_markdown_states_mean_std_and_verdicts(tmp_path):
    runs, _ = find_runs([two_variant_sweep(tmp_path / "sweep")])
    text = comparison_markdown(compare_groups(runs))
    assert "| A | 3 | 1, 2, 3 | 62.00 +- 2.00 | 51.00 +- 1.00 | model/roi_heads/mask_head=X |" in text
    assert "| B | 3 | 1, 2, 3 | 67.00 +- 1.00 | 52.00 +- 1.00 | model/roi_heads/mask_head=Y |" in text
    assert "| segm/AP | 62.00 +- 2.00 | 67.00 +- 1.00 | +5.00 **exceeds** |" in text
    assert "| bbox/AP | 51.00 +- 1.00 | 52.00 +- 1.00 | +1.00 within |" in text
    assert "## Per category (AP)" in text and "| segm/AP-disk | 20.00 +- 10.00 | 50.00 +- 10.00 | +30.00 **exceeds** |" in text
    assert "## Per error type" in text and "| segm/dAP-miss | 4.00 +- 1.00 | 1.00 +- 0.00 | -3.00 **exceeds** |" in text
    assert "|mean_B - mean_A| > std_A + std_B" in text


def test_written_files(tmp_path):
    runs, _ = find_runs([two_variant_sweep(tmp_path / "sweep")])
    paths = write_comparison(compare_groups(runs), tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["stats"]["B"]["segm/AP"] == {"n": 3, "mean": 67.0, "std": 1.0, "values": [66.0, 67.0, 68.0]}
    assert data["differences"]["B"]["bbox/AP"] == {"delta": 1.0, "exceeds_spread": False}
    with Image.open(paths["chart"]) as chart:
        assert chart.format == "PNG" and chart.width > 300 and chart.height > 200


def test_sweep_summary_has_the_same_table(tmp_path):
    sweep = two_variant_sweep(tmp_path / "sweep")
    write_summary(sweep)
    summary = (sweep / "summary.md").read_text()
    assert "## Seeds pooled (as tools/compare_runs.py)" in summary
    table = comparison_markdown(compare_groups(find_runs([sweep])[0]))
    for line in table.splitlines():
        if line.startswith("| A |") or line.startswith("| B |") or line.startswith("| segm/AP |"):
            assert line in summary, line
    assert (sweep / "comparison.md").is_file() and (sweep / "comparison.png").is_file()


def test_sweep_without_repeated_seeds_gets_no_pooled_table(tmp_path):
    for job, head in enumerate("XY"):
        make_run(tmp_path / str(job), seed=1, head=head, metrics={"segm/AP": 1.0}, job=job)
    write_summary(tmp_path)
    assert "Seeds pooled" not in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "comparison.md").exists()


def test_failed_job_of_a_sweep_is_left_out_with_a_note(tmp_path):
    sweep = two_variant_sweep(tmp_path / "sweep")
    make_run(sweep / "6", seed=4, head="Y", metrics=None, job=6)
    runs, notes = find_runs([sweep])
    assert len(runs) == 6 and len(notes) == 1 and f"'{sweep / '6'}' has no metrics.json" in notes[0]
    assert any("has no metrics.json" in n for n in compare_groups(runs, notes=notes).notes)


def test_single_run_groups_are_not_judged(tmp_path):
    sweep = two_variant_sweep(tmp_path / "sweep")
    make_run(sweep / "6", seed=1, head="Z", metrics={"segm/AP": 90.0}, job=6)
    c = compare_groups(find_runs([sweep])[0])
    assert [g.key for g in c.groups] == ["A", "B", "C"]
    assert {d.metric: d.exceeds for d in c.differences["C"]}["segm/AP"] is None
    assert any("group C has a single run" in n for n in c.notes)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such run directory or sweep"),
    ("not_a_run", "is neither a run directory"),
    ("no_metrics", "has no metrics.json (a run that did not finish"),
    ("bad_json", "is not valid json"),
    ("mixed_datasets", "were evaluated on different test sets"),
    ("single_seed", "every configuration has a single run"),
])
def test_malformed_inputs_name_the_folder(tmp_path, case, message):
    if case == "missing":
        paths = [tmp_path / "nope"]
    elif case == "not_a_run":
        (tmp_path / "empty" / "sub").mkdir(parents=True)
        paths = [tmp_path / "empty"]
    elif case == "no_metrics":
        paths = [make_run(tmp_path / "r", seed=1, head="X", metrics=None)]
    elif case == "bad_json":
        run = make_run(tmp_path / "r", seed=1, head="X", metrics={"segm/AP": 1.0})
        (run / "metrics.json").write_text("{not json")
        paths = [run]
    elif case == "mixed_datasets":
        paths = [make_run(tmp_path / "a", seed=1, head="X", metrics={"segm/AP": 1.0}),
                 make_run(tmp_path / "b", seed=2, head="X", metrics={"segm/AP": 2.0}, test_set="coco_tiny_val")]
    else:
        paths = [make_run(tmp_path / "a", seed=1, head="X", metrics={"segm/AP": 1.0}),
                 make_run(tmp_path / "b", seed=1, head="Y", metrics={"segm/AP": 2.0})]
    with pytest.raises(RunComparisonError, match=re.escape(message)) as info:
        compare_groups(find_runs(paths)[0])
    assert str(paths[0]) in str(info.value)


def test_labels_leave_out_the_overrides_every_run_shares(tmp_path):
    import yaml

    sweep = two_variant_sweep(tmp_path / "sweep")
    for job in sweep.iterdir():
        if job.is_dir():
            file = job / ".hydra" / "overrides.yaml"
            file.write_text(yaml.safe_dump(["train.max_iter=60", *yaml.safe_load(file.read_text())]))
    assert [g.label for g in group_runs(find_runs([sweep])[0])] == ["model/roi_heads/mask_head=X",
                                                                    "model/roi_heads/mask_head=Y"]
