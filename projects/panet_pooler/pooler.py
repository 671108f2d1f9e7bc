"""PANetPooler: pool every RoI from every FPN level and fuse the grids (PANet's adaptive feature pooling)."""

from __future__ import annotations

from typing import Sequence

import torch

from framework.errors import ConfigError
from framework.modeling.poolers import ROIAlignV2, pooler_rois
from framework.registry import ROI_POOLERS
from framework.structures.boxes import Boxes
from projects.panet_pooler.fusion import FUSIONS, Fusion, fuse_levels

__all__ = ["PANetPooler"]


@ROI_POOLERS.register()
class PANetPooler(ROIAlignV2):
    """ROIAlignV2 on every level for every RoI, fused element-wise, instead of one level per RoI.

    FPN's rule sends a box to one level by its size, so two boxes of nearly equal size can get
    features of different levels, and a small box never sees the coarse levels' context. PANet
    (Liu et al., CVPR 2018) showed that RoIs of every size draw on every level once the heads can
    choose, and pooled all levels for all RoIs.

    The sampling (``aligned=True``, ``sampling_ratio``) is ROIAlignV2's own :meth:`pool`. The level
    assignment knobs of the base (``canonical_box_size``, ``canonical_level``) are not knobs here:
    nothing is assigned. The paper's per-level fc (box branch) or conv (mask branch) before the
    fusion is not done here: the pooler is built with only ``output_size`` and ``scales``, not the
    channel count a learnable layer needs; it belongs in a head that takes the L grids.

    Runtime args: output_size (an int or (h, w)), scales (1 / stride of each level, finest first).

    Args:
        fusion: how the L grids of a RoI become one: ``max`` (the paper's choice), ``sum`` (its
            ablation) or ``mean`` (sum / L, the scale of one level's features).
        sampling_ratio: bilinear samples per bin side; 0 = adaptive ceil(roi_size / output_size),
            evaluated per level (a box covers more cells on a finer level).

    Input: L feature maps (N, C, Hi, Wi) and N Boxes; output (M, C, h, w), M boxes in
    image-then-box order, as every pooler.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        scales: Sequence[float],
        *,
        fusion: Fusion = "max",
        sampling_ratio: int = 0,
    ):
        super().__init__(output_size, scales, sampling_ratio=sampling_ratio)
        if fusion not in FUSIONS:
            raise ConfigError(f"PANetPooler: fusion={fusion!r} is not one of {list(FUSIONS)}")
        self.fusion: Fusion = fusion

    def forward(self, x: list[torch.Tensor], box_lists: list[Boxes]) -> torch.Tensor:
        """Pool every box from each of the L levels and fuse.

        Args:
            x: L feature maps (N, C, Hi, Wi), in the order of ``scales``.
            box_lists: N Boxes (one per image) in input-image pixels.

        Returns:
            (M, C, out_h, out_w).
        """
        if len(x) != len(self.scales):
            raise ValueError(
                f"PANetPooler was built for {len(self.scales)} levels (scales {self.scales}) but got {len(x)} feature maps"
            )
        if len(box_lists) != x[0].size(0):
            raise ValueError(f"PANetPooler: {len(box_lists)} box lists for a batch of {x[0].size(0)} images")
        if len(box_lists) == 0:
            return x[0].new_zeros((0, x[0].shape[1], *self.output_size))
        # Zero boxes still go through roi_align (-> (0, C, h, w)) so the output stays in the graph.
        rois = pooler_rois(box_lists, x[0].dtype)
        return fuse_levels([self.pool(feature, rois, scale) for feature, scale in zip(x, self.scales)], self.fusion)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, scales={self.scales}, fusion={self.fusion}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
