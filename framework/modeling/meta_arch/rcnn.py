"""GeneralizedRCNN: normalise and pad images, backbone -> proposals -> RoI heads -> post-process."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import nn

from framework.modeling.postprocessing import detector_postprocess
from framework.registry import BACKBONES, META_ARCHITECTURES, PROPOSAL_GENERATORS, ROI_HEADS, Spec
from framework.structures import ImageList, Instances

__all__ = ["GeneralizedRCNN"]


@META_ARCHITECTURES.register()
class GeneralizedRCNN(nn.Module):
    """Any two-stage detector: a backbone, a proposal generator (``rpn``) and RoI heads.

    Knobs:
        backbone, rpn, roi_heads: nested components (defaults: R50-FPN, RPN, StandardROIHeads
            without mask head, i.e. Faster R-CNN; configs/model/ presets add the mask head).
        pixel_mean, pixel_std: per-channel normalisation, in ``input_format`` channel order and
            0-255 scale (defaults: detectron2's MSRA-ResNet values, BGR, std 1).
        input_format: channel order of the ``image`` tensors fed to the model.
        mask_threshold: probability threshold when pasting masks into the image.

    Input (``forward``): a list of per-image dicts with
        ``image``: (C, H, W) tensor in ``input_format``, 0-255, already resized;
        ``instances`` (training): Instances with ``gt_boxes``, ``gt_classes`` (and ``gt_masks``);
        ``height``, ``width`` (optional): the original size that outputs are mapped back to.
    Output: training: dict of losses; inference: per image ``{"instances": Instances}`` with
        ``pred_boxes``, ``scores``, ``pred_classes`` (and ``pred_masks`` (R, H, W) bool).
    """

    def __init__(
        self,
        *,
        backbone: Spec[BACKBONES] = "FPN",
        rpn: Spec[PROPOSAL_GENERATORS] = "RPN",
        roi_heads: Spec[ROI_HEADS] = "StandardROIHeads",
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        input_format: Literal["BGR", "RGB"] = "BGR",
        mask_threshold: float = 0.5,
    ):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")
        self.backbone = BACKBONES.build(backbone)
        shapes = self.backbone.output_shape()
        # Attribute names follow detectron2 so its checkpoints map 1:1.
        self.proposal_generator = PROPOSAL_GENERATORS.build(rpn, input_shape=shapes)
        self.roi_heads = ROI_HEADS.build(roi_heads, input_shape=shapes)
        self.input_format = input_format
        self.mask_threshold = mask_threshold
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: Sequence[dict[str, Any]]) -> ImageList:
        """Normalise each image and pad the batch to the backbone's size divisibility."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, size_divisibility=self.backbone.size_divisibility)

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        if not self.training:
            return self.inference(batched_inputs)
        missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
        if missing:
            raise ValueError(f"GeneralizedRCNN in training mode needs 'instances' in every input; missing in inputs {missing}")
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        return {**detector_losses, **proposal_losses}

    @torch.no_grad()
    def inference(self, batched_inputs: Sequence[dict[str, Any]], do_postprocess: bool = True) -> list:
        """Detections per image; with ``do_postprocess`` mapped to each input's ``height``/``width``."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return results
        out = []
        for r, x, size in zip(results, batched_inputs, images.image_sizes):
            h, w = x.get("height", size[0]), x.get("width", size[1])
            out.append({"instances": detector_postprocess(r, int(h), int(w), mask_threshold=self.mask_threshold)})
        return out
