"""Export a run and compare its onnxruntime / torch.export predictions with eager Predictor's.

The tolerances are issue 27's: every detection matched one to one with the same class, boxes
within 1e-2 px, scores within 1e-3, mask IoU >= 0.99 per detection; :data:`WORST` keeps the
largest differences seen (printed at the end of the test session with ``-s``, quoted in
docs/deployment.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from decisive_model import make_decisive
from framework.checkpoint import Checkpointer
from framework.config.compose import compose
from framework.engine.builders import build_model
from framework.engine.predictor import Predictor
from framework.export.cli import main as export_main
from framework.structures import Instances

BOX_TOL, SCORE_TOL, MIN_MASK_IOU = 1e-2, 1e-3, 0.99
#: (model, backend) -> worst box / score difference and smallest mask IoU seen.
WORST: dict[tuple[str, str], dict[str, float]] = {}


def exported_run(root: Path, overrides: list[str]) -> Path:
    """A run directory (config.yaml, model_final.pth of a decisive random model) exported by the
    ``framework-export`` command (tools/export_model.py) to ``root/export`` in both formats, from
    one torch.export recording; returns the run directory. About a minute of CPU per model (the
    ONNX translation is most of it), so each test module shares its exports."""
    cfg = compose(overrides)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu"))
    make_decisive(Predictor(model=model, cfg=cfg))
    Checkpointer(model, str(root)).save("model_final")
    assert export_main([str(root), "--format", "onnx", "torch_export"]) == 0
    return root


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def assert_parity(eager: Instances, other: Instances, *, key: tuple[str, str]) -> None:
    """Every detection of ``eager`` matched by one of ``other`` within the tolerances (and none left over)."""
    assert other.image_size == eager.image_size
    assert len(other) == len(eager), f"{key}: {len(other)} detections, eager {len(eager)}"
    worst = WORST.setdefault(key, {"box": 0.0, "score": 0.0, "mask_iou": 1.0, "detections": 0})
    free = list(range(len(other)))
    boxes_o, boxes_e = other.pred_boxes.tensor, eager.pred_boxes.tensor
    for i in range(len(eager)):
        candidates = [j for j in free if other.pred_classes[j] == eager.pred_classes[i]
                      and (boxes_o[j] - boxes_e[i]).abs().max() <= BOX_TOL
                      and abs(other.scores[j] - eager.scores[i]) <= SCORE_TOL]
        assert candidates, (f"{key}: eager detection {i} (class {int(eager.pred_classes[i])}, score "
                            f"{float(eager.scores[i]):.5f}, box {boxes_e[i].tolist()}) has no match")
        j = min(candidates, key=lambda j: float((boxes_o[j] - boxes_e[i]).abs().max()))
        free.remove(j)
        worst["box"] = max(worst["box"], float((boxes_o[j] - boxes_e[i]).abs().max()))
        worst["score"] = max(worst["score"], float(abs(other.scores[j] - eager.scores[i])))
        if eager.has("pred_masks"):
            iou = mask_iou(other.pred_masks[j], eager.pred_masks[i])
            worst["mask_iou"] = min(worst["mask_iou"], iou)
            assert iou >= MIN_MASK_IOU, f"{key}: detection {i} mask IoU {iou:.4f} < {MIN_MASK_IOU}"
    worst["detections"] += len(eager)
