"""EventStorage and the writers (console, JSON lines, TensorBoard)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from framework.utils.events import EventStorage, get_event_storage
from framework.utils.writers import ConsoleWriter, JSONWriter, TensorboardWriter


def test_history_latest_median_avg():
    with EventStorage(start_iter=0) as storage:
        for i, v in enumerate([1.0, 2.0, 3.0, 10.0]):
            storage.iter = i
            storage.put_scalar("loss", v)
        h = storage.history("loss")
        assert h.latest() == 10.0
        assert h.median(3) == 3.0  # median(2, 3, 10)
        assert h.avg(4) == 4.0  # (1 + 2 + 3 + 10) / 4
        assert h.values() == [(1.0, 0), (2.0, 1), (3.0, 2), (10.0, 3)]
        assert storage.latest() == {"loss": (10.0, 3)}


def test_latest_with_smoothing_hint_and_put_scalars():
    with EventStorage(start_iter=5) as storage:
        storage.put_scalars(loss_a=4.0, loss_b=1.0)
        storage.put_scalar("lr", 0.5, smoothing_hint=False)
        storage.iter = 6
        storage.put_scalars(loss_a=2.0, loss_b=torch.tensor(3.0))
        storage.put_scalar("lr", 0.25, smoothing_hint=False)
        out = storage.latest_with_smoothing_hint(window_size=2)
    # smoothed: median of the last 2 values; lr (no smoothing): the latest value.
    assert out == {"loss_a": (3.0, 6), "loss_b": (2.0, 6), "lr": (0.25, 6)}
    assert storage.smoothing_hints() == {"loss_a": True, "loss_b": True, "lr": False}


def test_smoothing_hint_must_not_change():
    with EventStorage() as storage:
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        with pytest.raises(ValueError, match="lr"):
            storage.put_scalar("lr", 0.1, smoothing_hint=True)


def test_put_scalar_at_given_iteration():
    with EventStorage(start_iter=10) as storage:
        storage.put_scalar("bbox/AP", 40.0, smoothing_hint=False, cur_iter=7)
    assert storage.latest() == {"bbox/AP": (40.0, 7)}


def test_name_scope_prefixes_and_nests():
    with EventStorage() as storage:
        with storage.name_scope("rpn"):
            storage.put_scalar("loss", 1.0)
            with storage.name_scope("level2/"):
                storage.put_scalar("num_pos", 3)
        storage.put_scalar("loss", 2.0)
    assert sorted(storage.histories()) == ["loss", "rpn/level2/num_pos", "rpn/loss"]


def test_get_event_storage_innermost_and_outside():
    with pytest.raises(RuntimeError, match="EventStorage"):
        get_event_storage()
    with EventStorage() as outer:
        assert get_event_storage() is outer
        with EventStorage() as inner:
            assert get_event_storage() is inner
        assert get_event_storage() is outer
    with pytest.raises(RuntimeError):
        get_event_storage()


def test_unknown_history_name_suggests():
    with EventStorage() as storage:
        storage.put_scalar("loss_cls", 1.0)
        with pytest.raises(KeyError, match="loss_cls"):
            storage.history("loss_cl")


def test_histogram_statistics():
    with EventStorage(start_iter=3) as storage:
        storage.put_histogram("w", torch.tensor([0.0, 1.0, 1.0, 2.0]), bins=2)
    (h,) = storage.histograms
    # bins [0, 1) and [1, 2]: 0 -> first, 1, 1, 2 -> second
    assert h["bucket_counts"] == [1.0, 3.0]
    assert h["bucket_limits"] == [1.0, 2.0]
    assert (h["min"], h["max"], h["num"], h["sum"], h["sum_squares"]) == (0.0, 2.0, 4, 4.0, 6.0)
    assert h["global_step"] == 3 and h["tag"] == "w"
    storage.clear_histograms()
    assert storage.histograms == []


def test_images_and_texts_then_clear():
    with EventStorage(start_iter=2) as storage:
        storage.put_image("vis", torch.zeros(3, 4, 5, dtype=torch.uint8))
        storage.put_text("config", "a: 1")
        with pytest.raises(ValueError, match="C, H, W"):
            storage.put_image("bad", torch.zeros(4, 5))
    [(name, img, itr)] = storage.images
    assert (name, tuple(img.shape), itr) == ("vis", (3, 4, 5), 2)
    assert storage.texts == [("config", "a: 1", 2)]
    storage.clear_images()
    storage.clear_texts()
    assert storage.images == [] and storage.texts == []


def test_json_writer_lines(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    writer = JSONWriter(str(tmp_path), filename="sub/metrics.json", window=20)
    with EventStorage(start_iter=0) as storage:
        storage.put_scalar("loss", 1.0)
        storage.iter = 1
        storage.put_scalar("loss", 3.0)
        writer.write()
        storage.iter = 2
        storage.put_scalar("loss", 5.0)
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new: no line
        # a metric put later at an iteration already written still gets its own line
        storage.put_scalar("bbox/AP", 40.0, smoothing_hint=False, cur_iter=2)
        writer.write()
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"iteration": 1, "loss": 2.0},  # median(1, 3)
        {"iteration": 2, "loss": 3.0, "lr": 0.1},  # median(1, 3, 5)
        {"iteration": 2, "bbox/AP": 40.0},
    ]


def test_json_writer_appends(tmp_path):
    path = tmp_path / "metrics.json"
    for value in (1.0, 2.0):  # two runs, e.g. before and after a resume
        writer = JSONWriter(str(tmp_path), filename="metrics.json")
        with EventStorage() as storage:
            storage.put_scalar("x", value, smoothing_hint=False)
            writer.write()
        writer.close()
    assert [json.loads(line)["x"] for line in path.read_text().splitlines()] == [1.0, 2.0]


def test_tensorboard_writer_events_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = TensorboardWriter(str(tmp_path), window=1)
    with EventStorage(start_iter=0) as storage:
        for i, v in enumerate([0.5, 0.25, 0.125]):
            storage.iter = i
            storage.put_scalar("loss", v)
            writer.write()
        storage.put_image("vis", torch.ones(3, 2, 2))
        storage.put_histogram("w", torch.arange(10.0), bins=5)
        storage.put_text("note", "hello")
        writer.write()
        assert storage.images == [] and storage.histograms == [] and storage.texts == []
    writer.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert "vis" in acc.Tags()["images"]
    assert "w" in acc.Tags()["histograms"]


def test_console_writer_line(caplog):
    writer = ConsoleWriter(max_iter=10, window=20)
    with EventStorage(start_iter=0) as storage:
        for i in range(5):
            storage.iter = i
            storage.put_scalars(time=0.5, data_time=0.25, loss_a=1.5, total_loss=2.0)
            storage.put_scalar("lr", 0.02, smoothing_hint=False)
        with caplog.at_level(logging.INFO, logger="framework.utils.writers"):
            writer.write()
            writer.write()  # same iteration: not printed twice
    [line] = [r.getMessage() for r in caplog.records]
    # ETA = median step time 0.5 s * (10 - 4 - 1) remaining steps = 2.5 s
    assert line.startswith("eta: 0:00:02  iter: 4/10  total_loss: 2  loss_a: 1.5  time: 0.5000  data_time: 0.2500  lr: 0.02")
    assert storage.history("eta_seconds").latest() == 2.5
