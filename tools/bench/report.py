"""The benchmark's report: the machine it ran on and the markdown tables."""

from __future__ import annotations

import contextlib
import json
import platform
from typing import Any

__all__ = ["cpu_ticks", "machine_info", "steal_share", "to_markdown"]


def machine_info(device) -> dict[str, Any]:
    """The CPU (its name and features: AVX2, AVX-512, AVX512_BF16, AMX, after any ONEDNN_MAX_CPU_ISA /
    ATEN_CPU_CAPABILITY restriction, which is named), threads, versions, device."""
    import torch
    import torchvision

    from framework.utils.cpu_features import cpu_features

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    features = cpu_features()
    info = {"cpu": cpu, "cpu_features": features.names(), "cpu_restricted_by": list(features.restricted),
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine so far, from Linux's /proc/stat; None elsewhere.

    Steal is time the hypervisor gave this virtual machine's CPUs to someone else: under steal
    both sides run slower and noisier, so the report says how much there was."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
        return fields[7], sum(fields[:8])
    return None


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen between two :func:`cpu_ticks` readings."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    features = ", ".join(m.get("cpu_features", [])) or "none of AVX2/AVX-512/AVX512_BF16/AMX"
    if m.get("cpu_restricted_by"):
        features += f" (restricted by {', '.join(m['cpu_restricted_by'])})"
    lines = [f"Machine: {m['cpu']} [{features}], {m['threads']} threads, {m.get('gpu', 'CPU')}; torch {m['torch']}, "
             f"torchvision {m['torchvision']}, Python {m['python']}. Mode: {'quick' if report['quick'] else 'full'}, "
             f"{report['repeats']} timed runs per side." + _steal_note(report.get("cpu_steal")), ""]
    rows = []
    for name in ("inference", "train"):
        r = report["sections"].get(name)
        if not r:
            continue
        mem = f"{r['peak_rss_ratio']:.2f}" if r["peak_rss_ratio"] else "n/a"
        if r.get("peak_cuda_ratio"):
            mem += f" (CUDA {r['peak_cuda_ratio']:.2f})"
        rows.append(f"| {name}, {r['unit']} | {r['torchvision']['median_s']:.3f} | {r['ours']['median_s']:.3f} | "
                    f"**{r['ratio']:.2f}** | {mem} | {'yes' if r['equal_work'] else 'NO'} |")
        for variant, v in r.get("variants", {}).items():
            note = "" if variant != "bf16" else (" (native bf16)" if r.get("cpu_bf16_native") else " (emulated: no AVX512_BF16/AMX)")
            work = f"{v['detections']} detections" if name == "inference" else "same batch"
            rows.append(f"| {name}, {r['unit']}, ours {variant}{note} vs torchvision fp32 | {r['torchvision']['median_s']:.3f} | "
                        f"{v['median_s']:.3f} | **{v['ratio_vs_torchvision_fp32']:.2f}** | n/a | {work} |")
    if rows:
        lines += ["| Mask R-CNN R50-FPN | torchvision | ours | ratio | peak memory ratio | equal work |",
                  "|---|---|---|---|---|---|", *rows, ""]
        for name in ("inference", "train"):
            r = report["sections"].get(name)
            if r:
                lines.append(f"- {name} work: " + json.dumps(r["work"], default=str))
        lines.append("")
    mj = report["sections"].get("main_job")
    if mj:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in mj["shares"].items())
        lines += [f"Main job ({mj['work']['model']}, batch {mj['work']['batch']}): {mj['s_per_iter']:.3f} s/iter; "
                  f"{shares}; it consumes {mj['images_per_s_consumed']:.1f} img/s."]
        for variant, v in mj.get("variants", {}).items():
            shares = ", ".join(f"{k} {x:.0%}" for k, x in v["shares"].items())
            lines.append(f"Main job in {variant} (train.amp={variant}, same batches, alternating): {v['s_per_iter']:.3f} "
                         f"s/iter (**{v['ratio_vs_fp32']:.2f}** of fp32); {shares}.")
        lines.append("")
    data = report["sections"].get("data")
    if data:
        lines += ["| data pipeline | img/s | x main job's consumption |", "|---|---|---|"]
        for k, v in data["results"].items():
            x = f"{v['x_main_job']:.1f}" if v["x_main_job"] else "n/a"
            lines.append(f"| {k} | {v['img_per_s']:.1f} | {x} |")
        lines.append("")
    ev = report["sections"].get("eval")
    if ev:
        parts = [f"{k} {v:.2f} s" if isinstance(v, float) else f"{k}: {v}" for k, v in ev["results"].items()]
        lines += [f"Evaluation of {ev['predictions']} box + mask predictions: " + "; ".join(parts) + ".", ""]
    export = report["sections"].get("export")
    if export:
        from bench.export_speed import export_markdown

        lines += export_markdown(export)
    peak = report["sections"].get("peak")
    if peak:
        lines += ["| peak on the spot | GFLOP/s |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" if v >= 10 else f"| {k} | {v:.2g} |" for k, v in peak["results"].items()]
        lines.append("")
    roofline = [(name, label, e) for name, r in report["sections"].items() for label, e in r.get("roofline", {}).items()]
    if roofline:
        lines += ["| roofline (counted work / median time vs the 3x3 conv peak in the same dtype and layout) | GFLOP | "
                  "GFLOP/s | peak GFLOP/s | fraction |", "|---|---|---|---|---|"]
        for name, label, e in roofline:
            peak_s = f"{e['peak_gflop_per_s']:.0f} ({e['peak_key']})" if e.get("peak_gflop_per_s") else f"n/a ({e['peak_key']})"
            fraction = f"**{e['fraction']:.2f}**" if e.get("fraction") is not None else "n/a"
            lines.append(f"| {name}, {label} | {e['gflop']:.1f} | {e['achieved_gflop_per_s']:.0f} | {peak_s} | {fraction} |")
        lines.append("")
    return "\n".join(lines)


def _steal_note(share: float | None) -> str:
    if share is None:
        return ""
    note = f" CPU steal during the run: {share:.0%}"
    return note + (" (the host was busy: timings slower and noisier than usual on both sides)." if share >= 0.05 else ".")
