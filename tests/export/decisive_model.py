"""A randomly initialised detector with well separated outputs, for export parity tests.

A model straight from initialisation predicts near-ties everywhere: class scores about 1/(K+1)
for every box and mask probabilities about 0.5 for every pixel (its last layers start at std
0.01 and 0.001), so float rounding alone reorders detections and flips mask pixels, in any two
implementations. A trained model is decisive; this one is made so without training: the class
and mask predictors are redrawn wider, and the background logit is raised until a blank image
gives no detection at all, while a textured image still gives many (the tests check both).
Imported by name (pytest puts tests/export on sys.path through conftest).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from framework.engine.predictor import Predictor

#: The blank image of the parity tests: mid-grey, (H, W, 3) uint8.
BLANK = np.full((210, 280, 3), 128, dtype=np.uint8)


def _last_conv(module: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


@torch.no_grad()
def make_decisive(predictor: Predictor, *, seed: int = 1, margin: float = 3.0) -> None:
    """Redraw ``predictor.model``'s class scores (std 0.1) and mask logits (std 0.5) and raise the
    background bias so that every RoI of :data:`BLANK` scores background ``margin`` logits above
    any class. Works on any RoI heads with a ``box_predictor.cls_score`` (plugins included)."""
    model = predictor.model
    generator = torch.Generator().manual_seed(seed)
    heads = model.roi_heads
    cls_score = heads.box_predictor.cls_score
    cls_score.weight.copy_(torch.randn(cls_score.weight.shape, generator=generator) * 0.1)
    mask_head = getattr(heads, "mask_head", None)
    conv = _last_conv(mask_head) if mask_head is not None else None
    if conv is not None:
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.5)
    seen: list[torch.Tensor] = []
    handle = cls_score.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    try:
        predictor(BLANK)
    finally:
        handle.remove()
    logits = torch.cat(seen)  # (R, K + 1), every RoI of every stage
    lift = (logits[:, :-1].max() - logits[:, -1].min()).clamp(min=0) + margin
    cls_score.bias[-1] += lift
