"""A randomly initialised detector with well separated outputs, for export parity tests.

A model straight from initialisation is ill-conditioned for a comparison of two implementations,
in two ways:

* near-ties: its last layers start at std 0.01 / 0.001, so class scores are about 1/(K+1) for
  every box and mask probabilities about 0.5 for every pixel; float rounding alone then reorders
  detections and flips mask pixels;
* scale: a randomly initialised backbone without trained normalisation amplifies its input (the
  box head's feature has a norm of about 15 on the R18 main job, about 16000 on R50-FPN), so the
  same std gives R50 logits in the thousands (every score 1.0, ties again) and box deltas that
  shrink boxes to a few thousandths of a pixel.

A trained model is decisive at a sane scale; this one is made so without training. Each
prediction layer (RPN objectness and deltas, class scores and box deltas of every stage, mask
logits, a MaskIoU head's IoUs) is redrawn with a std chosen from the norm of its input, measured
on a textured calibration image, so that its outputs have a fixed spread whatever the backbone: logits spread over a few units (scores
neither tied nor saturated), box deltas small (boxes stay near their anchors / proposals, none
degenerate). Then the background bias is raised until a blank image gives no detection at all,
while a textured image still gives many (the tests check both). Imported by name (pytest puts
tests/export on sys.path through conftest).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from framework.engine.predictor import Predictor

#: The blank image of the parity tests: mid-grey, (H, W, 3) uint8.
BLANK = np.full((210, 280, 3), 128, dtype=np.uint8)
#: The calibration image: noise, a size no test uses.
CALIBRATION = np.random.default_rng(123).integers(0, 256, (200, 260, 3), dtype=np.uint8)

#: Std of each redrawn layer's outputs on the calibration image. Objectness and class logits
#: spread over a few units; RPN deltas are in anchor units (0.1: an anchor moves or grows by
#: about 10%); box deltas are divided by the box coding's weights (10, 10, 5, 5) when decoded, so
#: 0.5 moves a proposal by about 5%; mask logits of std 4 leave few pixels near the threshold.
#: A MaskIoU predictor (projects/mask_scoring_rcnn) regresses an IoU that rescales the scores
#: (clamped to [0, 1]): a spread of 0.15 about a bias of 0.5 keeps every score apart from 0.
OUTPUT_STD = {"objectness": 1.0, "rpn_deltas": 0.1, "class": 1.5, "box_deltas": 0.5, "mask": 4.0, "maskiou": 0.15}
#: The bias each redrawn layer gets (0 unless named here).
OUTPUT_BIAS = {"maskiou": 0.5}


def _mask_prediction_layers(mask_head: nn.Module | None) -> list[nn.Module]:
    """The layers whose outputs are mask logits, in the order they run: a head's last Conv2d
    (Mask R-CNN's conv-upsample heads), or PointRend's coarse ``prediction`` then its point head's
    ``predictor`` (projects/point_rend: the coarse logits are an input of the point head, whose
    logits are the final masks)."""
    if mask_head is None:
        return []
    coarse = getattr(getattr(mask_head, "coarse_head", None), "prediction", None)
    point = getattr(getattr(mask_head, "point_head", None), "predictor", None)
    if point is not None:
        return [layer for layer in (coarse, point) if layer is not None]
    convs = [m for m in mask_head.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1:]


def _input_norm(layer: nn.Module, inputs: list[torch.Tensor]) -> float:
    """Root-mean-square norm of what one output of ``layer`` reads (a Linear's input row, a
    Conv2d's input patch of C * kh * kw values), from the mean square of all ``inputs``' values."""
    squares = sum(x.double().pow(2).sum().item() for x in inputs)
    mean_square = squares / max(sum(x.numel() for x in inputs), 1)
    return max(mean_square * layer.weight[0].numel(), 1e-12) ** 0.5


@torch.no_grad()
def _redraw(predictor: Predictor, layers: dict[str, nn.Module], generator: torch.Generator) -> None:
    """Run the calibration image, then redraw each of ``layers`` (role -> layer) with weights of
    std ``OUTPUT_STD[role] / input norm`` and the bias ``OUTPUT_BIAS`` gives (else zero)."""
    if not layers:  # nothing of this kind in the model: no calibration run either
        return
    seen: dict[str, list[torch.Tensor]] = {role: [] for role in layers}
    handles = [layer.register_forward_hook(lambda m, args, out, role=role: seen[role].append(args[0].detach()))
               for role, layer in layers.items()]
    try:
        predictor(CALIBRATION)
    finally:
        for handle in handles:
            handle.remove()
    for role, layer in layers.items():
        if not seen[role]:
            raise RuntimeError(f"make_decisive: {role} layer {type(layer).__name__} saw no input on the calibration image")
        std = OUTPUT_STD[role] / _input_norm(layer, seen[role])
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64).mul(std).float())
        if layer.bias is not None:
            layer.bias.fill_(OUTPUT_BIAS.get(role, 0.0))


def _present(pairs: Iterable[tuple[str, nn.Module | None]]) -> dict[str, nn.Module]:
    return {role: layer for role, layer in pairs if layer is not None}


@torch.no_grad()
def make_decisive(predictor: Predictor, *, seed: int = 1, margin: float = 3.0) -> None:
    """Redraw ``predictor.model``'s prediction layers at a fixed output spread (:data:`OUTPUT_STD`)
    and raise the background bias so that every RoI of :data:`BLANK` scores background ``margin``
    logits above any class, in every stage. Works on any RoI heads with a ``box_predictor`` holding
    a ``cls_score`` or a list of them (Cascade R-CNN's stages); the RPN and box deltas are redrawn
    where they have detectron2's layer names, the mask logits as :func:`_mask_prediction_layers`
    finds them, and a MaskIoU ``maskiou_head.predictor`` (projects/mask_scoring_rcnn).

    Each step is calibrated on what the steps before it now give, in the order the model runs:
    the RPN (its proposals feed the box branch), each box stage (its boxes feed the next stage),
    the mask layers, the MaskIoU predictor (it reads the mask logits).
    """
    model = predictor.model
    generator = torch.Generator().manual_seed(seed)
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    _redraw(predictor, _present([("objectness", getattr(rpn_head, "objectness_logits", None)),
                                 ("rpn_deltas", getattr(rpn_head, "anchor_deltas", None))]), generator)
    heads = model.roi_heads
    stages = list(heads.box_predictor) if isinstance(heads.box_predictor, nn.ModuleList) else [heads.box_predictor]
    for stage in stages:
        _redraw(predictor, _present([("class", stage.cls_score),
                                     ("box_deltas", getattr(stage, "bbox_pred", None))]), generator)
    for layer in _mask_prediction_layers(getattr(heads, "mask_head", None)):
        _redraw(predictor, {"mask": layer}, generator)
    maskiou = getattr(getattr(heads, "maskiou_head", None), "predictor", None)
    _redraw(predictor, _present([("maskiou", maskiou)]), generator)
    seen: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(stages))}
    handles = [stage.cls_score.register_forward_hook(lambda m, args, out, k=k: seen[k].append(out.detach()))
               for k, stage in enumerate(stages)]
    try:
        predictor(BLANK)
    finally:
        for handle in handles:
            handle.remove()
    for k, stage in enumerate(stages):
        logits = torch.cat(seen[k])  # (R, K + 1), every RoI this stage scored
        lift = (logits[:, :-1].max() - logits[:, -1].min()).clamp(min=0) + margin
        stage.cls_score.bias[-1] += lift
