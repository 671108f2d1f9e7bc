"""inference_on_dataset, DatasetEvaluators and the result formatting helpers."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import torch
from torch import nn

from framework.data.skipping import ReportsSkippedImages, SkippedImage
from framework.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_on_dataset,
    print_csv_format,
    results_table,
)
from framework.structures.boxes import Boxes
from framework.structures.instances import Instances

NAN = float("nan")


class FixedModel(nn.Module):
    """Returns the same one-box Instances for every image; records the mode it was called in."""

    def __init__(self, fail_at_call: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls: list[dict] = []
        self.fail_at_call = fail_at_call

    def forward(self, batch):
        if self.fail_at_call is not None and len(self.calls) == self.fail_at_call:
            raise RuntimeError("boom")
        score = self.weight * 0.5
        self.calls.append(
            {
                "training": self.training,
                "inference_mode": torch.is_inference_mode_enabled(),
                "requires_grad": score.requires_grad,
            }
        )
        boxes = Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]))
        inst = Instances((10, 10), pred_boxes=boxes, scores=score, pred_classes=torch.tensor([0]))
        return [{"instances": inst} for _ in batch]


class RecordingEvaluator(DatasetEvaluator):
    """Counts what it is given; reports it under ``task``."""

    def __init__(self, task: str = "count") -> None:
        self.task = task
        self.resets = 0
        self.image_ids: list[int] = []

    def reset(self) -> None:
        self.resets += 1
        self.image_ids = []

    def process(self, inputs, outputs):
        assert len(inputs) == len(outputs)
        assert all(len(o["instances"]) == 1 for o in outputs)
        self.image_ids.extend(i["image_id"] for i in inputs)

    def evaluate(self):
        return {self.task: {"images": float(len(self.image_ids))}}


class SkipRecordingEvaluator(RecordingEvaluator):
    """Also records what ``process_skipped`` is given, and when."""

    def reset(self) -> None:
        super().reset()
        self.skipped_calls: list[tuple[int, list]] = []  # (images processed by then, images)

    def process_skipped(self, images):
        self.skipped_calls.append((len(self.image_ids), list(images)))


class SkippingLoader:
    """LOADER's batches; reports ``skipped`` (the images a real loader would have left out) after a pass."""

    def __init__(self, skipped) -> None:
        self.skipped = skipped

    def __iter__(self):
        return iter(LOADER)

    def __len__(self) -> int:
        return len(LOADER)

    def skipped_images(self):
        return self.skipped


LOADER = [[{"image_id": 1}, {"image_id": 2}], [{"image_id": 3}], [{"image_id": 4}]]


def test_every_image_is_processed_once_and_train_mode_is_restored(caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar, progress is logged
    model, evaluator = FixedModel(), RecordingEvaluator()
    assert model.training
    with caplog.at_level(logging.INFO, logger="framework.evaluation.evaluator"):
        results = inference_on_dataset(model, LOADER, evaluator, warmup_iters=1, log_period_s=0)
    assert results == {"count": {"images": 4.0}}
    assert evaluator.image_ids == [1, 2, 3, 4]
    assert evaluator.resets == 1
    assert model.calls == [{"training": False, "inference_mode": True, "requires_grad": False}] * 3
    assert model.training  # back in train mode
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    # 1 warmup batch of 3: the per-image time is over the 2 images of the last two batches.
    assert "s/img per device, on 1 devices), after 1 warmup batches" in caplog.text
    assert "Inference done 3/3 batches" in caplog.text


def test_eval_mode_model_stays_in_eval_mode_and_warmup_is_capped():
    model = FixedModel().eval()
    # warmup_iters larger than the loader: capped at len - 1 so that one batch is still timed.
    inference_on_dataset(model, LOADER, RecordingEvaluator(), warmup_iters=100)
    assert not model.training


def test_mode_is_restored_when_the_model_raises():
    model = FixedModel(fail_at_call=1)
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, LOADER, RecordingEvaluator())
    assert model.training
    assert not torch.is_inference_mode_enabled()


def test_list_of_evaluators_and_none():
    a, b = RecordingEvaluator("a"), RecordingEvaluator("b")
    assert inference_on_dataset(FixedModel(), LOADER, [a, b]) == {"a": {"images": 4.0}, "b": {"images": 4.0}}
    assert inference_on_dataset(FixedModel(), LOADER, None) == {}


def test_dataset_evaluators_merges_and_rejects_duplicate_tasks():
    both = DatasetEvaluators([RecordingEvaluator("a"), RecordingEvaluator("b")])
    both.reset()
    both.process([{"image_id": 7}], FixedModel()([{"image_id": 7}]))
    assert both.evaluate() == {"a": {"images": 1.0}, "b": {"images": 1.0}}

    clash = DatasetEvaluators([RecordingEvaluator("a"), RecordingEvaluator("a")])
    clash.reset()
    with pytest.raises(KeyError, match="both RecordingEvaluator and RecordingEvaluator returned results for task 'a'"):
        clash.evaluate()


def test_print_csv_format_and_table(caplog):
    results = {"bbox": {"AP": 70.0, "AP50": 100.0, "APl": NAN, "AP-cat": 40.0}, "segm": {"AP": 12.34567}}
    with caplog.at_level(logging.INFO, logger="framework.evaluation.evaluator"):
        text = print_csv_format(results)
    # Per-category entries (with a "-") are left out.
    assert text == "Task: bbox\nAP,AP50,APl\n70.0000,100.0000,nan\nTask: segm\nAP\n12.3457"
    assert "copypaste: 70.0000,100.0000,nan" in caplog.text

    table = results_table(results)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()]
    # Tasks with different metric names get separate tables; the separator rows are cells[1] / cells[4].
    assert [cells[0], cells[2], cells[3], cells[5]] == [
        ["task", "AP", "AP50", "APl"], ["bbox", "70.000", "100.000", "nan"], ["task", "AP"], ["segm", "12.346"]
    ]
    same_keys = results_table({"bbox": {"AP": 1.0}, "segm": {"AP": 2.0}}).splitlines()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in same_keys[2:]]
    assert rows == [["bbox", "1.000"], ["segm", "2.000"]]  # one shared table
    assert results_table({}) == "(no results)"


GONE = SkippedImage(file_name="5.png", image_id=5, reason="cannot read image 5.png: OSError: image file is truncated")


def test_the_evaluator_is_told_what_the_loader_left_out_and_the_count_is_reported(caplog):
    evaluator = SkipRecordingEvaluator()
    loader = SkippingLoader([GONE])
    assert isinstance(loader, ReportsSkippedImages)
    with caplog.at_level(logging.WARNING, logger="framework.evaluation.evaluator"):
        results = inference_on_dataset(FixedModel(), loader, evaluator)
    assert evaluator.skipped_calls == [(4, [GONE])]  # once, after the last batch, before evaluate
    assert results == {"count": {"images": 4.0}, "data": {"skipped_test_images": 1.0}}
    assert "1 test image(s) could not be read and were left out of the evaluation" in caplog.text


def test_nothing_left_out_is_reported_as_zero_and_a_strict_loader_as_nothing():
    evaluator = SkipRecordingEvaluator()
    assert inference_on_dataset(FixedModel(), SkippingLoader([]), evaluator)["data"] == {"skipped_test_images": 0.0}
    assert evaluator.skipped_calls == [(4, [])]
    # None: the loader never leaves images out (bad_data=strict); a plain iterable says nothing either.
    for loader in (SkippingLoader(None), LOADER):
        evaluator = SkipRecordingEvaluator()
        assert inference_on_dataset(FixedModel(), loader, evaluator) == {"count": {"images": 4.0}}
        assert evaluator.skipped_calls == []


def test_dataset_evaluators_forward_skipped_images_and_the_base_ignores_them():
    a, b = SkipRecordingEvaluator("a"), SkipRecordingEvaluator("b")
    results = inference_on_dataset(FixedModel(), SkippingLoader([GONE]), [a, b, RecordingEvaluator("c")])
    assert a.skipped_calls == b.skipped_calls == [(4, [GONE])]
    assert results["c"] == {"images": 4.0} and results["data"] == {"skipped_test_images": 1.0}


def test_the_count_joins_an_evaluators_data_task_but_never_overwrites_it():
    assert inference_on_dataset(FixedModel(), SkippingLoader([GONE]), RecordingEvaluator("data")) == {
        "data": {"images": 4.0, "skipped_test_images": 1.0}}

    class Clash(RecordingEvaluator):
        def evaluate(self):
            return {"data": {"skipped_test_images": 7.0}}

    with pytest.raises(KeyError, match="already hold 'data/skipped_test_images'"):
        inference_on_dataset(FixedModel(), SkippingLoader([GONE]), Clash())
