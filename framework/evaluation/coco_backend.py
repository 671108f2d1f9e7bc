"""Which COCO API computes COCO AP: pycocotools (the reference) or faster-coco-eval.

faster-coco-eval (``pip install 'framework[fast-eval]'``) reimplements COCOeval's matching and
accumulation in C++ behind pycocotools' API (``COCO``, ``loadRes``, ``params``, ``eval["precision"]``),
several times faster on large sets; the evaluator reads the same arrays from either, and a test
checks that both give the same metrics on the same inputs.
"""

from __future__ import annotations

from typing import Any, Literal

from framework.errors import ConfigError, did_you_mean

__all__ = ["Backend", "BACKENDS", "coco_api"]

Backend = Literal["pycocotools", "faster_coco_eval"]
BACKENDS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")


def coco_api(backend: str) -> tuple[Any, Any]:
    """``(COCO, COCOeval)`` classes of ``backend``; a ConfigError naming the extra to install when
    faster-coco-eval is missing."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as e:
            raise ConfigError("COCO evaluation backend 'faster_coco_eval' needs the faster-coco-eval package: "
                              "pip install 'framework[fast-eval]' (or use backend=pycocotools)") from e
        return COCO, COCOeval_faster
    raise ConfigError(f"unknown COCO evaluation backend {backend!r}; valid: {list(BACKENDS)}."
                      f"{did_you_mean(str(backend), BACKENDS)}")
