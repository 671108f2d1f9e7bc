"""The whole predictor as one module that torch.export can record: image in, detections out.

:class:`ExportablePredictor` wraps a built detector with everything :class:`framework.engine.
predictor.Predictor` does around it, as tensor operations: the mapper's test-time resize (PIL's
bilinear, to the bit; :mod:`framework.export.resize`), the channel order, the model (normalisation,
backbone, proposals, RoI heads), and :func:`framework.modeling.postprocessing.detector_postprocess`
(boxes back to the input's pixels, clipped, empty ones dropped, masks pasted and thresholded;
:mod:`framework.export.paste`). A deployment then needs only the exported file.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from framework.errors import ConfigError
from framework.export.paste import GRAPH_MASK_PASTERS
from framework.export.resize import resize_image, resize_shape

__all__ = ["ExportablePredictor", "OUTPUT_NAMES"]

#: Names of the exported graph's outputs, in order (``masks`` only with a mask head).
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")


class ExportablePredictor(nn.Module):
    """A detector plus its test-time input pipeline and post-processing, for ``torch.export``.

    Args:
        model: a built GeneralizedRCNN-like detector in eval mode (``inference(batched_inputs,
            do_postprocess=False)``, ``input_format``, ``mask_threshold``, ``mask_paste``).
        short_edge, max_size, resize_style: the config's test-time resize
            (:func:`framework.export.build.exported_resize`: ``input.test.augmentations``'s one
            ``short_edge_length`` and ``max_size``; ``"detectron2"`` for ``ResizeShortestEdge``,
            ``"torchvision"`` for ``ResizeShortestEdgeTorchvision``).
        mask_on: whether the model predicts masks (adds the ``masks`` output).
        mask_paste: the pasting rule (:data:`framework.export.paste.GRAPH_MASK_PASTERS`), the
            model's ``mask_paste``: ``"detectron2"`` or ``"torchvision"``.

    Call: ``module(image)`` with ``image`` (H, W, 3) uint8 RGB, any H, W >= 2. Returns the tuple
    ``boxes`` (N, 4) float32 XYXY in the input's pixels, ``scores`` (N,) float32, ``classes`` (N,)
    int64 contiguous ids, and with ``mask_on`` ``masks`` (N, H, W) uint8 (1 = foreground); N may be 0.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        short_edge: int,
        max_size: int,
        resize_style: Literal["detectron2", "torchvision"] = "detectron2",
        mask_on: bool,
        mask_paste: Literal["detectron2", "torchvision"] = "detectron2",
    ) -> None:
        super().__init__()
        if resize_style not in ("detectron2", "torchvision"):
            raise ConfigError(f"ExportablePredictor: resize_style must be 'detectron2' or 'torchvision', got {resize_style!r}")
        if mask_paste not in GRAPH_MASK_PASTERS:
            raise ConfigError(f"ExportablePredictor: mask_paste must be one of {', '.join(GRAPH_MASK_PASTERS)}, "
                              f"got {mask_paste!r}")
        self.model = model.eval()
        self.mask_paste = mask_paste
        self.short_edge = int(short_edge)
        self.max_size = int(max_size)
        self.resize_style = resize_style
        self.mask_on = bool(mask_on)
        self.input_format = getattr(model, "input_format", "RGB")
        self.mask_threshold = float(getattr(model, "mask_threshold", 0.5))

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        height, width = image.shape[0], image.shape[1]
        height_f = torch.scalar_tensor(height, dtype=torch.float64)
        width_f = torch.scalar_tensor(width, dtype=torch.float64)
        new_h_t, new_w_t = resize_shape(height_f, width_f, short_edge=self.short_edge, max_size=self.max_size,
                                        style=self.resize_style)
        if self.short_edge == 0:
            new_h, new_w = height, width
        else:
            # Data-dependent sizes: bounded so that the layers after them can be recorded.
            new_h, new_w = new_h_t.item(), new_w_t.item()
            torch._check(new_h >= 1)
            torch._check(new_w >= 1)
            torch._check(new_h <= self.max_size)
            torch._check(new_w <= self.max_size)
        chw = resize_image(image, new_h, new_w, new_h_t.to(torch.float64), new_w_t.to(torch.float64),
                           style=self.resize_style)
        if self.input_format == "BGR":
            chw = chw.flip(0)
        (result,) = self.model.inference([{"image": chw}], do_postprocess=False)
        return self.postprocess(result, height, width, height_f, width_f, new_h_t, new_w_t)

    def postprocess(self, result, height, width, height_f: Tensor, width_f: Tensor,
                    new_h: Tensor, new_w: Tensor) -> tuple[Tensor, ...]:
        """:func:`framework.modeling.postprocessing.detector_postprocess` as tensor operations.

        The scale factors are computed in float64 and rounded to float32 as the eager code's
        Python floats are, so boxes agree to float32 rounding.
        """
        scale_x = (width_f / new_w.to(torch.float64)).to(torch.float32)
        scale_y = (height_f / new_h.to(torch.float64)).to(torch.float32)
        boxes = result.pred_boxes.tensor * torch.stack([scale_x, scale_y, scale_x, scale_y])
        w32, h32 = width_f.to(torch.float32), height_f.to(torch.float32)
        zero = torch.zeros((), dtype=torch.float32)
        x0, y0, x1, y1 = boxes.unbind(dim=1)
        boxes = torch.stack([torch.clamp(x0, zero, w32), torch.clamp(y0, zero, h32),
                             torch.clamp(x1, zero, w32), torch.clamp(y1, zero, h32)], dim=1)
        keep = torch.nonzero((boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)).flatten()
        boxes = boxes[keep]
        outputs = (boxes, result.scores[keep].to(torch.float32), result.pred_classes[keep].to(torch.int64))
        if not self.mask_on:
            return outputs
        masks = result.pred_masks[keep][:, 0]
        paste = GRAPH_MASK_PASTERS[self.mask_paste]
        pasted = paste(masks, boxes, height, width, h32, w32, threshold=self.mask_threshold)
        return outputs + (pasted,)
