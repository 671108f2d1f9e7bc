"""tools/benchmark.py and tools/analyze_model.py: they run, verify equal work, and report sane numbers.

Speed itself is never asserted here (timed unit tests are meaningless on a shared machine): the
benchmark reports ratios, docs/benchmarks.md records them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(REPO / "tools" / name), *args], cwd=cwd, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_benchmark_inference_runs_equal_work_on_both_sides(tmp_path):
    out = tmp_path / "bench.json"
    # A smaller test size than the default 800 keeps this test short; the work is equal at any size.
    res = _tool("benchmark.py", "--sections", "inference", "--repeats", "1", "--variants", "bf16", "--test-size", "320", "533",
                "--json", str(out), "--markdown", str(tmp_path / "bench.md"), cwd=tmp_path)
    report = json.loads(out.read_text())
    inference = report["sections"]["inference"]
    work = inference["work"]
    assert inference["equal_work"], work
    assert work["detections"] == {"ours": 100, "torchvision": 100}
    assert work["input_size"]["ours"] == work["input_size"]["torchvision"] and min(work["input_size"]["ours"]) == 320
    assert work["proposals"]["ours"] == work["proposals"]["torchvision"] == [1000]
    assert inference["ratio"] == pytest.approx(inference["ours"]["median_s"] / inference["torchvision"]["median_s"])
    # same network, same input: the same multiply-adds to within the ops only one side has
    roofline = inference["roofline"]
    assert roofline["ours"]["gflop"] == pytest.approx(roofline["torchvision"]["gflop"], rel=0.02)
    assert roofline["ours bf16"]["gflop"] == roofline["ours"]["gflop"]
    # each figure against the conv peak of its own dtype and layout, measured in the same run (peak joins by itself)
    peaks = report["sections"]["peak"]["conv_peaks"]
    assert set(peaks) == {"fp32/NCHW", "fp32/channels_last", "bf16/NCHW", "bf16/channels_last"}
    assert roofline["torchvision"]["peak_key"] == "fp32/NCHW"
    assert roofline["ours bf16"]["peak_key"] == f"bf16/{work['memory_format']['ours']}"
    seconds = {"ours": inference["ours"]["median_s"], "torchvision": inference["torchvision"]["median_s"],
               "ours bf16": inference["variants"]["bf16"]["median_s"]}
    assert set(roofline) == set(seconds)
    for name, entry in roofline.items():
        assert entry["achieved_gflop_per_s"] == pytest.approx(entry["gflop"] / seconds[name])
        assert entry["fraction"] == pytest.approx(entry["achieved_gflop_per_s"] / peaks[entry["peak_key"]])
    assert re.search(r"\| inference, ours bf16 \| [\d.]+ \| \d+ \| \d+ \(bf16/\w+\) \| \*\*[\d.]+\*\* \|", res.stdout)
    # the CPU is named with its features
    from framework.utils.cpu_features import cpu_features

    assert report["machine"]["cpu_features"] == cpu_features().names()
    assert all(f in res.stdout.splitlines()[0] for f in report["machine"]["cpu_features"])
    assert re.search(r"\| inference, s/img \| [\d.]+ \| [\d.]+ \| \*\*[\d.]+\*\* \|", res.stdout)
    assert (tmp_path / "bench.md").read_text().strip() in res.stdout
    if Path("/proc/stat").exists():  # how much of the machine the hypervisor took meanwhile
        assert 0.0 <= report["cpu_steal"] <= 1.0 and 0.0 <= inference["cpu_steal"] <= 1.0
        assert re.search(r"CPU steal during the run: \d+%", res.stdout)
    # ours in bf16 autocast, timed in the same alternation against torchvision in fp32
    bf16 = inference["variants"]["bf16"]
    assert bf16["detections"] == 100
    assert bf16["ratio_vs_torchvision_fp32"] == pytest.approx(bf16["median_s"] / inference["torchvision"]["median_s"])
    assert re.search(r"\| inference, s/img, ours bf16 .*vs torchvision fp32 \| [\d.]+ \| [\d.]+ \| \*\*[\d.]+\*\* \|", res.stdout)


def test_steal_share_is_stolen_ticks_over_all_ticks(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_report", REPO / "tools" / "bench" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    assert report.steal_share((10, 1000), (60, 1500)) == pytest.approx(0.1)
    assert report.steal_share(None, (60, 1500)) is None and report.steal_share((5, 10), (5, 10)) is None
    ticks = report.cpu_ticks()
    if Path("/proc/stat").exists():
        steal, total = ticks
        assert 0 <= steal <= total
    assert "busy" in report._steal_note(0.2) and "busy" not in report._steal_note(0.01)


def test_benchmark_main_job_data_eval_and_peak_sections(tmp_path):
    out = tmp_path / "bench.json"
    _tool("benchmark.py", "--quick", "--sections", "main_job", "data", "eval", "peak", "--repeats", "1", "--variants", "bf16",
          "--json", str(out), cwd=tmp_path)
    sections = json.loads(out.read_text())["sections"]
    main_job = sections["main_job"]
    assert main_job["s_per_iter"] > 0 and main_job["images_per_s_consumed"] > 0
    assert sum(main_job["shares"].values()) == pytest.approx(1.0, abs=0.02)
    assert {"data", "backbone", "rpn", "roi_heads", "backward", "optimizer"} <= set(main_job["shares"])
    # train.amp=bf16's step on the same batches, and both steps' rates against their own peaks
    bf16 = main_job["variants"]["bf16"]
    assert bf16["ratio_vs_fp32"] == pytest.approx(bf16["s_per_iter"] / main_job["s_per_iter"])
    assert sum(bf16["shares"].values()) == pytest.approx(1.0, abs=0.02)
    layout = main_job["work"]["memory_format"]
    assert main_job["roofline"]["fp32"]["peak_key"] == f"fp32/{layout}" and main_job["roofline"]["bf16"]["peak_key"] == f"bf16/{layout}"
    assert main_job["roofline"]["fp32"]["gflop"] == main_job["roofline"]["bf16"]["gflop"] > 0
    assert all(0 < e["fraction"] < 1.5 for e in main_job["roofline"].values())
    data = sections["data"]["results"]
    assert {"synthetic_train, 0 workers", "synthetic_train, 2 workers"} <= set(data)
    for row in data.values():
        assert row["img_per_s"] > 0 and row["x_main_job"] == pytest.approx(
            row["img_per_s"] / main_job["images_per_s_consumed"])
    assert isinstance(sections["eval"]["results"]["pycocotools"], float) and sections["eval"]["predictions"] > 0
    if importlib.util.find_spec("faster_coco_eval") is not None:  # the dev extra installs it
        assert isinstance(sections["eval"]["results"]["faster-coco-eval"], float)
    assert all(v > 0 for v in sections["peak"]["results"].values())


def test_analyze_model_lists_parameters_and_flops_per_module(tmp_path):
    res = _tool("analyze_model.py", "--num-images", "1", "--depth", "2", cwd=tmp_path)
    assert re.search(r"Parameters: [\d.]+M", res.stdout)
    flops = float(re.search(r"FLOPs: ([\d.]+) G multiply-adds per image", res.stdout).group(1))
    assert flops > 0.1
    assert re.search(r"\|\s+backbone\s+\|", res.stdout) and re.search(r"\|\s+roi_heads\s+\|", res.stdout)
