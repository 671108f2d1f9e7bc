"""tools/compare_runs.py on fabricated run directories (tests/fake_runs.py: a 2-variant x 3-seed sweep
whose statistics are worked out by hand): the printed table, the files, user errors."""

from __future__ import annotations

import json

from fake_runs import make_run, two_variant_sweep


def test_sweep_prints_mean_std_and_verdicts_and_writes_files(compare_runs, tmp_path, capsys):
    sweep = two_variant_sweep(tmp_path / "sweep")
    assert compare_runs.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| A | 3 | 1, 2, 3 | 62.00 +- 2.00 | 51.00 +- 1.00 | model/roi_heads/mask_head=X |" in out
    assert "| B | 3 | 1, 2, 3 | 67.00 +- 1.00 | 52.00 +- 1.00 | model/roi_heads/mask_head=Y |" in out
    assert "| segm/AP | 62.00 +- 2.00 | 67.00 +- 1.00 | +5.00 **exceeds** |" in out
    assert "| bbox/AP | 51.00 +- 1.00 | 52.00 +- 1.00 | +1.00 within |" in out
    assert f"Wrote comparison.md, comparison.json, comparison.png to {sweep}" in out
    assert json.loads((sweep / "comparison.json").read_text())["differences"]["B"]["segm/AP"]["exceeds_spread"] is True


def test_run_directories_and_baseline(compare_runs, tmp_path, capsys):
    sweep = two_variant_sweep(tmp_path / "sweep")
    runs = [str(sweep / str(j)) for j in range(6)]
    assert compare_runs.main([*runs, "--baseline", "1"]) == 0
    out = capsys.readouterr().out
    assert "| segm/AP | 62.00 +- 2.00 | 67.00 +- 1.00 | -5.00 **exceeds** |" in out and "Wrote" not in out
    assert compare_runs.main([*runs, "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "comparison.png").is_file()


def test_user_errors_are_one_line_with_exit_code_2(compare_runs, tmp_path, capsys):
    bad = make_run(tmp_path / "unfinished", seed=1, head="X", metrics=None)
    single = make_run(tmp_path / "single", seed=1, head="X", metrics={"segm/AP": 1.0})
    other = make_run(tmp_path / "other", seed=2, head="X", metrics={"segm/AP": 1.0}, test_set="coco_tiny_val")
    sweep = two_variant_sweep(tmp_path / "sweep")
    cases = [
        ([str(bad)], f"'{bad}' has no metrics.json"),
        ([str(single)], "every configuration has a single run"),
        ([str(single), str(other)], "were evaluated on different test sets"),
        ([str(tmp_path / "nope")], "no such run directory or sweep"),
        ([str(sweep), "--baseline", "5"], "baseline group 5 does not exist"),
    ]
    for argv, message in cases:
        assert compare_runs.main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
