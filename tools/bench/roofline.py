"""How close each timed figure comes to the machine: achieved GFLOP/s against a peak measured on the spot.

A model's floating-point work (torch.utils.flop_counter: 2 flops per multiply-add of convolutions
and matrix products; RoIAlign, NMS and elementwise ops are not counted) divided by its median
time is its achieved rate; the roofline is the rate of a 3x3 convolution of 256 channels measured
in the same process, in the same dtype (float32 or bfloat16) and memory layout (NCHW or
channels_last) as the model ran. Convolutions are nearly all of a Mask R-CNN's counted work, so
that convolution is the ceiling the model could reach; the fraction says how much of it is lost
to everything else (memory-bound ops, Python, one-thread sections).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["count_flops", "measure_peaks", "roofline_entry", "add_fractions"]


def _dense_addmm_flops(self, mat1, mat2, *args, out_val=None, **kwargs) -> int:
    """torch.utils.flop_counter's addmm count, 0 for a sparse ``mat1``: our RoIAlign is such a
    product (``framework/layers/roi_align_sparse.py``), which the dense formula would count as a
    (RoIs x bins) x (H*W) x C matrix product, trillions of flops; RoIAlign is not counted on either side."""
    import torch
    from torch.utils.flop_counter import addmm_flop

    if mat1.layout != torch.strided:
        return 0
    return addmm_flop(self.shape, mat1.shape, mat2.shape)


_dense_addmm_flops._get_raw = True  # FlopCounterMode passes the tensors, not just their shapes


def count_flops(call: Callable[[], Any]) -> tuple[float, Any]:
    """``call()`` under torch's flop counter: (flops, its result). Forward and backward ops that
    run inside ``call`` are both counted (a training step counts its backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm: _dense_addmm_flops}) as counter:
        result = call()
    return float(counter.get_total_flops()), result


def _peak_key(dtype: str, layout: str) -> str:
    return f"{dtype}/{layout}"


def measure_peaks(device, repeats: int) -> dict[str, Any]:
    """Matrix product and 3x3 convolution GFLOP/s on ``device``, in float32 and bfloat16, NCHW and
    channels_last: ``{"results": {label: GFLOP/s}, "conv_peaks": {"fp32/NCHW": GFLOP/s, ...}}``.
    bfloat16 is measured whatever the CPU: without AVX512_BF16 / AMX it is emulated, and its low
    peak is the truth of that machine."""
    import torch

    from framework.utils.measure import compare_alternating

    def rate(fn: Callable[[], Any], flops: float) -> float:
        return flops / compare_alternating({"x": fn}, repeats=repeats, warmup=1)["x"].median / 1e9

    n = 2048
    conv_flops = 2 * 256 * 256 * 9 * 100 * 136
    results: dict[str, float] = {}
    conv_peaks: dict[str, float] = {}
    with torch.inference_mode():
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            results[f"matmul 2048x2048, {dtype_name}"] = rate(lambda: a @ b, 2 * n**3)
            x = torch.randn(1, 256, 100, 136, device=device, dtype=dtype)
            conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device=device, dtype=dtype).eval()
            for layout, memory_format in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
                conv_l, x_l = conv.to(memory_format=memory_format), x.contiguous(memory_format=memory_format)
                value = rate(lambda: conv_l(x_l), conv_flops)
                results[f"conv 3x3 256->256 at 100x136, {layout} {dtype_name}"] = value
                conv_peaks[_peak_key(dtype_name, layout)] = value
    return {"unit": "GFLOP/s", "results": results, "conv_peaks": conv_peaks}


def roofline_entry(flops: float, seconds: float, *, dtype: str, layout: str | None) -> dict[str, Any]:
    """One figure's work and rate: ``{"gflop", "achieved_gflop_per_s", "peak_key"}``; its
    ``fraction`` is added by :func:`add_fractions` once the peaks are known."""
    return {"gflop": flops / 1e9, "achieved_gflop_per_s": flops / seconds / 1e9,
            "peak_key": _peak_key(dtype, layout or "NCHW")}


def add_fractions(report: dict[str, Any]) -> None:
    """Give every ``roofline`` entry of every section its ``fraction`` of the peak measured in
    its dtype and layout (``sections.peak.conv_peaks``), and its ``peak_gflop_per_s``."""
    peaks = report["sections"].get("peak", {}).get("conv_peaks", {})
    for section in report["sections"].values():
        for entry in section.get("roofline", {}).values():
            peak = peaks.get(entry["peak_key"])
            entry["peak_gflop_per_s"] = peak
            entry["fraction"] = entry["achieved_gflop_per_s"] / peak if peak else None
