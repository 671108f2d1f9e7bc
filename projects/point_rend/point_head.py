"""PointRend's point head (an MLP over points, as 1x1 conv1d) and its loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from fvcore.nn import weight_init
from torch import nn

from framework.structures import Instances
from framework.utils.events import put_scalars

__all__ = ["StandardPointHead", "point_loss"]


class StandardPointHead(nn.Module):
    """``num_fc`` layers of ``fc_dim`` over [fine-grained features, coarse logits] per point; with
    ``coarse_pred_each_layer`` the coarse logits are appended to every layer's input (detectron2's
    StandardPointHead; names ``fc{k}``, ``predictor``).

    Shapes: fine (R, C, P), coarse (R, K, P) -> (R, K or 1, P) logits.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, fc_dim: int, num_fc: int, coarse_pred_each_layer: bool, cls_agnostic_mask: bool
    ):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        dim = in_channels + num_classes
        self.fc_layers = []
        for k in range(num_fc):
            fc = nn.Conv1d(dim, fc_dim, kernel_size=1)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            dim = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim, 1 if cls_agnostic_mask else num_classes, kernel_size=1)
        for layer in self.fc_layers:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = torch.cat([fine, coarse], dim=1)
        for layer in self.fc_layers:
            x = F.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.predictor(x)


def point_loss(point_logits: torch.Tensor, instances: Sequence[Instances], labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each RoI's points for its gt class (detectron2's ``roi_mask_point_loss``).

    Args:
        point_logits: (R, K or 1, P); instances: per image the R foreground proposals (``gt_classes``);
        labels: (R, P) targets in [0, 1].
    Returns:
        scalar (0 connected to the graph when R = 0).
    """
    if labels.shape[0] == 0:
        return point_logits.sum() * 0
    if point_logits.shape[1] == 1:
        logits = point_logits[:, 0]
    else:
        classes = torch.cat([i.gt_classes for i in instances if len(i)]).to(point_logits.device, torch.long)
        logits = point_logits[torch.arange(len(classes), device=classes.device), classes]
    put_scalars(**{"point/accuracy": ((logits > 0) == (labels > 0.5)).float().mean().item()})
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32), reduction="mean")
