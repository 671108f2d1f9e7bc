"""Run directories laid out as tools/train_net.py leaves them, with made-up final metrics (shared by the
run-comparison tests and the compare_runs tool test).

A run holds ``config.yaml`` (resolved: ``dataloader.train.seed`` equals ``seed``),
``.hydra/config.yaml`` (as composed: ``dataloader.train.seed: ${seed}``), ``.hydra/overrides.yaml``,
``metrics.json`` and, in a sweep, ``job_status.json`` (what the sweep callback writes).

The 2-variant x 3-seed sweep of :func:`two_variant_sweep` (mask head X vs Y), with its numbers
chosen so that the statistics are easy by hand (sample std, n - 1 = 2):

    metric          X (seeds 1, 2, 3)    Y (seeds 1, 2, 3)    Y - X   std_X + std_Y   exceeds?
    segm/AP         60, 62, 64: 62 +- 2  66, 67, 68: 67 +- 1  +5      3               yes
    bbox/AP         50, 51, 52: 51 +- 1  51, 52, 53: 52 +- 1  +1      2               no
    segm/AP-disk    10, 20, 30: 20 +- 10 40, 50, 60: 50 +- 10 +30     20              yes
    segm/dAP-cls    5, 5, 5: 5 +- 0      5, 5, 5: 5 +- 0      0       0               no (0 > 0 is false)
    segm/dAP-miss   3, 4, 5: 4 +- 1      1, 1, 1: 1 +- 0      -3      1               yes
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import yaml

VARIANTS = {
    "X": {"segm/AP": [60, 62, 64], "bbox/AP": [50, 51, 52], "segm/AP-disk": [10, 20, 30], "segm/dAP-cls": [5, 5, 5],
          "segm/dAP-miss": [3, 4, 5]},
    "Y": {"segm/AP": [66, 67, 68], "bbox/AP": [51, 52, 53], "segm/AP-disk": [40, 50, 60], "segm/dAP-cls": [5, 5, 5],
          "segm/dAP-miss": [1, 1, 1]},
}


def make_run(folder: Path, *, seed: int, head: str, metrics: Optional[dict], test_set: str = "synthetic_val",
             job: Optional[int] = None, with_hydra: bool = True) -> Path:
    """A finished run (``metrics=None``: one that failed before writing metrics.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    composed = {"seed": seed, "train": {"max_iter": 600}, "dataloader": {"train": {"seed": "${seed}", "num_workers": 1}},
                "model": {"roi_heads": {"mask_head": {"name": head}}}, "resume": False,
                "dataset": {"test": {"name": test_set, "json": None, "image_root": None}}}
    resolved = {**composed, "dataloader": {"train": {"seed": seed, "num_workers": 1}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved))
    if with_hydra:
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(composed))
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}",
                                                                          f"model/roi_heads/mask_head={head}"]))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps({"iteration": 600, **metrics}, indent=2))
    if job is not None:
        status = {"num": job, "status": "completed" if metrics is not None else "failed",
                  "error": None if metrics is not None else "RuntimeError: boom",
                  "overrides": [f"seed={seed}", f"model/roi_heads/mask_head={head}"], "seconds": 12.5}
        (folder / "job_status.json").write_text(json.dumps(status))
    return folder


def two_variant_sweep(root: Path) -> Path:
    """A multirun root with jobs 0..5: head X then Y, seeds 1, 2, 3 each (the table of the docstring)."""
    job = 0
    for head, values in VARIANTS.items():
        for k, seed in enumerate((1, 2, 3)):
            make_run(root / str(job), seed=seed, head=head, metrics={m: float(v[k]) for m, v in values.items()}, job=job)
            job += 1
    return root
