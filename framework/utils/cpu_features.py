"""What this CPU's vector units can do, as the kernels torch calls will see it.

One home for the questions "does this CPU have native bf16?" (``train.amp=auto``) and "which
instruction sets does it have?" (the benchmark's report). oneDNN, which runs the convolutions and
matrix products, can be held below the hardware's level with ``ONEDNN_MAX_CPU_ISA`` (and ATen's own
kernels with ``ATEN_CPU_CAPABILITY``): a restricted process reports the restricted features, so a
measurement "as on an AVX2 CPU" also picks what an AVX2 CPU would.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["CpuFeatures", "cpu_features", "has_native_bf16"]

# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA), lowest first, and what each one allows of ours.
_ONEDNN_ISA_ORDER = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                     "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX",
                     "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512",
                     "AVX10_2_512_AMX_2", "ALL", "DEFAULT")


class CpuFeatures(dict):
    """Feature name -> available, for ``AVX2``, ``AVX-512``, ``AVX512_BF16`` and ``AMX`` (bf16 tiles),
    after any ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` restriction of this process.
    ``restricted`` names the restricting variables that were set (empty when none)."""

    restricted: tuple[str, ...] = ()

    def names(self) -> list[str]:
        """The available features, in the order above."""
        return [name for name, present in self.items() if present]


def _cpuinfo_flags() -> set[str]:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    return set()


def _isa_allows(limit: str | None, needed: str) -> bool:
    """Whether oneDNN held at ``limit`` (ONEDNN_MAX_CPU_ISA) may use ``needed`` (same naming)."""
    if not limit:
        return True
    limit = limit.upper()
    if limit not in _ONEDNN_ISA_ORDER:
        return True  # a name this table does not know: oneDNN decides; assume no restriction
    return _ONEDNN_ISA_ORDER.index(limit) >= _ONEDNN_ISA_ORDER.index(needed)


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This process's CPU features (cached: they cannot change while it runs).

    Hardware support comes from torch's own CPU probe where it exists (``torch.cpu._is_*``), else
    from /proc/cpuinfo; restrictions from ``ONEDNN_MAX_CPU_ISA`` (oneDNN: convolutions, matrix
    products) and ``ATEN_CPU_CAPABILITY`` (ATen's vectorised kernels).
    """
    flags = _cpuinfo_flags()

    def probe(name: str, *cpuinfo_names: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        if fn is not None:
            with contextlib.suppress(Exception):
                return bool(fn())
        return any(n in flags for n in cpuinfo_names)

    hardware = {
        "AVX2": probe("_is_avx2_supported", "avx2"),
        "AVX-512": probe("_is_avx512_supported", "avx512f"),
        "AVX512_BF16": probe("_is_avx512_bf16_supported", "avx512_bf16"),
        "AMX": probe("_is_amx_tile_supported", "amx_bf16"),
    }
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    allowed = {
        "AVX2": _isa_allows(onednn, "AVX2") and aten not in ("default",),
        "AVX-512": _isa_allows(onednn, "AVX512_CORE") and aten not in ("default", "avx2"),
        "AVX512_BF16": _isa_allows(onednn, "AVX512_CORE_BF16") and aten not in ("default", "avx2"),
        "AMX": _isa_allows(onednn, "AVX512_CORE_AMX") and aten not in ("default", "avx2"),
    }
    features = CpuFeatures({name: hardware[name] and allowed[name] for name in hardware})
    features.restricted = tuple(v for v, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("ATEN_CPU_CAPABILITY", aten))
                                if value)
    return features


def has_native_bf16(device_type: str = "cpu") -> bool:
    """Whether bf16 matrix products run in hardware on ``device_type``: a CPU with AVX512_BF16 or AMX
    (elsewhere oneDNN emulates bf16, slower than float32), a CUDA GPU that supports bf16."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        features = cpu_features()
        return features["AVX512_BF16"] or features["AMX"]
    return False
