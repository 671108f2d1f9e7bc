"""End-to-end: test-time augmentation (``tta``) in a run. A tiny training run evaluates with TTA at
the end only; ``eval_only`` with TTA on its final checkpoint reproduces that final evaluation;
with TTA off the same checkpoint gives the plain metrics unchanged. Bad ``tta`` choices and knobs
fail at compose time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.config.compose import compose
from framework.engine.run import run
from framework.errors import ConfigError
from tiny_job import first_test_images, tiny_job

#: Two sizes around the tiny job's test size (128) and their mirrors: 4 views per test image.
TTA = ["tta=MultiScaleFlip", "tta.min_sizes=[112,144]", "tta.max_size=240"]
JOB = [*tiny_job(2), *first_test_images(3), "hooks.eval.period=1", "hooks.visualizer=null",
       "evaluators.coco.analysis=false", "model.rpn.post_nms_topk_test=50"]


def _metrics(run_dir: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if "/" in k}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-step run with TTA, evaluated after step 1 (periodic) and at the end."""
    run_dir = tmp_path_factory.mktemp("tta_job")
    run(compose(JOB + TTA), output_dir=run_dir)
    return run_dir


def test_training_evaluates_with_tta_at_the_end_only(trained):
    final = _metrics(trained)
    assert {"bbox/AP", "segm/AP", "bbox_TTA/AP", "segm_TTA/AP", "segm_TTA/AP50"} <= set(final)
    assert not any(k.startswith("data_TTA") for k in final)  # the skipped-image count is not repeated
    assert (trained / "inference_TTA" / "coco_instances_results.json").is_file()
    periodic = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    periodic = [line for line in periodic if line.get("iteration") == 0]
    assert periodic and "segm/AP" in periodic[0] and not any("_TTA" in k for k in periodic[0])


def test_eval_only_with_tta_reproduces_the_final_evaluation_and_tta_off_the_plain_one(trained, tmp_path):
    weights = f"weights={trained / 'model_final.pth'}"
    run(compose(JOB + TTA + ["eval_only=true", weights]), output_dir=tmp_path / "tta")
    assert _metrics(tmp_path / "tta") == pytest.approx(_metrics(trained), nan_ok=True)
    run(compose(JOB + ["eval_only=true", weights]), output_dir=tmp_path / "plain")
    plain = _metrics(tmp_path / "plain")
    assert plain == pytest.approx({k: v for k, v in _metrics(trained).items() if "_TTA" not in k}, nan_ok=True)
    assert not (tmp_path / "plain" / "inference_TTA").exists()


def test_tta_is_off_unless_chosen_and_removing_it_restores_the_default_config():
    default = compose([])
    assert default.tta is None and compose(["tta=MultiScaleFlip", "~tta"]) == default


@pytest.mark.parametrize("override, message", [
    (["tta=MultiScaleFlp"], r"Could not find 'tta/MultiScaleFlp'.*Did you mean 'MultiScaleFlip'"),
    (["tta=MultiScaleFlip", "tta.min_size=[3]"], r"Key 'min_size' not in 'MultiScaleFlipConfig'.*Did you mean 'min_sizes'"),
    (["tta=MultiScaleFlip", "tta.flip=maybe"], r"tta.flip=maybe.*'maybe' is not a valid bool"),
    (["tta.min_sizes=[3]"], r"'tta' is null in this config: select a component first \(tta=<name>\)"),
])
def test_a_bad_tta_choice_or_knob_fails_at_compose_time(override, message):
    with pytest.raises(ConfigError, match=f"(?s){message}"):
        compose(override)
