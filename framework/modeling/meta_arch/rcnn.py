"""GeneralizedRCNN: normalise and pad images, backbone -> proposals -> RoI heads -> post-process."""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
from torch import nn

from framework.errors import ConfigError
from framework.layers.amp import amp_autocast, check_amp
from framework.layers.memory_format import channels_last_trains_faster
from framework.layers.resize import resize_shortest_edge_torchvision
from framework.modeling.postprocessing import detector_postprocess
from framework.registry import BACKBONES, META_ARCHITECTURES, PROPOSAL_GENERATORS, ROI_HEADS, Spec
from framework.structures import Boxes, ImageList, Instances

__all__ = ["GeneralizedRCNN"]


def _float32_fields(instances: Instances) -> Instances:
    """``instances`` with every floating-point field (and Boxes) in float32, after autocast."""
    out = Instances(instances.image_size)
    for name, value in instances.get_fields().items():
        if isinstance(value, Boxes):
            value = Boxes(value.tensor.float())
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.float()
        out.set(name, value)
    return out


@META_ARCHITECTURES.register()
class GeneralizedRCNN(nn.Module):
    """Any two-stage detector: a backbone, a proposal generator (``rpn``) and RoI heads.

    Knobs:
        backbone, rpn, roi_heads: nested components (defaults: R50-FPN, RPN, StandardROIHeads
            without mask head, i.e. Faster R-CNN; configs/model/ presets add the mask head).
        pixel_mean, pixel_std: per-channel normalisation ``(image / input_scale - mean) / std``, in
            ``input_format`` channel order, on the scale after ``input_scale`` (defaults:
            detectron2's MSRA-ResNet values on the 0-255 scale, BGR, std 1).
        input_format: channel order of the ``image`` tensors fed to the model.
        input_scale: images (0-255) are divided by it before normalising: 255 puts them on the 0-1
            scale with ImageNet mean/std, exactly torchvision's arithmetic.
        test_resize: ``[min_size, max_size]``: at inference, resize each normalised image inside
            the model as torchvision does (:func:`framework.layers.resize_shortest_edge_torchvision`),
            bit for bit torchvision's input; the mapper then should not resize (``min_size: [0]``).
            null (default): images arrive resized by the mapper.
        mask_threshold: probability threshold when pasting masks into the image.
        mask_paste: how masks are resampled into the image: "detectron2" (bilinear sampling of the
            mask as cells spanning the box) or "torchvision" (its pad-by-one, integer-box resize).
        channels_last: when the batch enters the backbone in channels_last (NHWC) memory format,
            oneDNN's native layout; convolutions keep it, so the backbone, RPN and RoI heads run in
            it (the poolers read NHWC and give the mask head NHWC crops). "inference": at inference
            only (R50-FPN inference about 15% faster on a CPU); "always": in training as well;
            "never": NCHW throughout. "auto" (default): "always" where
            :func:`framework.layers.memory_format.channels_last_trains_faster` (a CPU with AVX-512:
            R50-FPN training step about 15%, the main job's step about 11% faster), else
            "inference" (on an AVX2 CPU the backward convolutions are slower in NHWC; CUDA is not
            measured). The same losses, gradients and detections up to float rounding
            (tests/modeling/test_rcnn_configs.py checks the losses to rtol 1e-4 and every gradient
            to 1e-4 of its largest value; tests/checkpoint/test_regression_pin.py the detections
            at the pin's tolerances).
        inference_amp: mixed precision at inference, as ``train.amp`` is for training: "bf16"
            (CPU or CUDA; fast on CPUs with AVX512_BF16 / AMX, emulated and slow on others) or
            "fp16" (CUDA) runs the backbone, RPN and RoI heads under ``torch.autocast``; scores,
            boxes and mask probabilities come out in float32 (the RPN and box predictor layers compute in
            float32: :func:`framework.layers.amp.float32_layers`). "auto": bf16 where the device
            computes it natively, fp16 on an older CUDA GPU, else float32
            (:func:`framework.layers.amp.resolve_amp`). "none" (default): float32.
        torch_compile: submodules to wrap in ``torch.compile`` (``nn.Module.compile``, in place: the
            state dict keeps its names), e.g. ``[backbone]`` or ``[backbone,
            roi_heads.mask_head]``. Each compiles on its first call and again for new input shapes
            (about a minute for the R50-FPN backbone on 2 CPU cores); docs/benchmarks.md has what
            it buys. Empty (default): eager.

    Input (``forward``): a list of per-image dicts with
        ``image``: (C, H, W) tensor in ``input_format``, 0-255, already resized (unless ``test_resize``);
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
        input_scale: float = 1.0,
        test_resize: Optional[Sequence[int]] = None,
        mask_threshold: float = 0.5,
        mask_paste: Literal["detectron2", "torchvision"] = "detectron2",
        channels_last: Literal["auto", "always", "inference", "never"] = "auto",
        inference_amp: Literal["none", "auto", "bf16", "fp16"] = "none",
        torch_compile: Sequence[str] = (),
    ):
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean {list(pixel_mean)} and pixel_std {list(pixel_std)} differ in length")
        self.backbone = BACKBONES.build(backbone)
        shapes = self.backbone.output_shape()
        # Attribute names follow detectron2 so its checkpoints map 1:1.
        self.proposal_generator = PROPOSAL_GENERATORS.build(rpn, input_shape=shapes)
        self.roi_heads = ROI_HEADS.build(roi_heads, input_shape=shapes)
        if input_scale <= 0:
            raise ConfigError(f"GeneralizedRCNN input_scale must be > 0, got {input_scale}")
        if test_resize is not None and (len(test_resize) != 2 or min(test_resize) < 0):
            raise ConfigError(f"GeneralizedRCNN test_resize must be [min_size, max_size] (>= 0) or null, got {list(test_resize)}")
        self.input_format = input_format
        self.input_scale = float(input_scale)
        self.test_resize = None if test_resize is None else (int(test_resize[0]), int(test_resize[1]))
        self.mask_threshold = mask_threshold
        self.mask_paste = mask_paste
        self.channels_last = channels_last
        check_amp(inference_amp, None, knob="inference_amp")
        self.inference_amp = inference_amp
        for name in torch_compile:
            self._submodule(name).compile()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def _submodule(self, name: str) -> nn.Module:
        try:
            return self.get_submodule(name)
        except AttributeError:
            children = [n for n, _ in self.named_children()]
            raise ConfigError(
                f"GeneralizedRCNN torch_compile: no submodule {name!r}; the model's parts are {children} "
                f"(dotted paths reach inside them, e.g. 'roi_heads.mask_head')"
            ) from None

    @property
    def output_fields(self) -> Optional[tuple[str, ...]]:
        """The fields of each output ``Instances`` at inference (e.g. ``pred_masks`` only with a
        mask head), as the RoI heads declare them; ``None`` when they do not."""
        fields = getattr(self.roi_heads, "output_fields", None)
        return tuple(fields) if fields is not None else None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: Sequence[dict[str, Any]]) -> ImageList:
        """Normalise each image (then resize it, with ``test_resize`` at inference) and pad the batch
        to the backbone's size divisibility."""
        images = []
        for x in batched_inputs:
            image = x["image"].to(self.device)
            if self.input_scale != 1.0:
                image = image / self.input_scale
            image = (image - self.pixel_mean) / self.pixel_std
            if self.test_resize is not None and not self.training:
                image = resize_shortest_edge_torchvision(image, *self.test_resize)
            images.append(image)
        return ImageList.from_tensors(images, size_divisibility=self.backbone.size_divisibility)

    def forward(self, batched_inputs: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        if not self.training:
            return self.inference(batched_inputs)
        missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
        if missing:
            raise ValueError(f"GeneralizedRCNN in training mode needs 'instances' in every input; missing in inputs {missing}")
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(self._to_memory_format(images.tensor))
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        return {**detector_losses, **proposal_losses}

    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, C, H, W) batch in the memory format ``channels_last`` picks for the current mode."""
        if self.channels_last == "never":
            nhwc = False
        elif self.channels_last == "always" or not self.training:
            nhwc = True
        else:
            nhwc = self.channels_last == "auto" and channels_last_trains_faster(x.device)
        return x.contiguous(memory_format=torch.channels_last) if nhwc else x

    @torch.no_grad()
    def inference(
        self,
        batched_inputs: Sequence[dict[str, Any]],
        do_postprocess: bool = True,
        *,
        detected_instances: Optional[Sequence[Instances]] = None,
    ) -> list:
        """Detections per image; with ``do_postprocess`` mapped to each input's ``height``/``width``
        (:meth:`postprocess`), else ``Instances`` at the size of each (resized) input image.

        Args:
            detected_instances: per image, detections at the size of its input image
                (``pred_boxes``, ``pred_classes``, ``scores``) to run only the RoI heads' branches
                that take given boxes on (``roi_heads.forward_with_given_boxes``: the mask branch),
                skipping proposals and the box branch (detectron2's argument; test-time
                augmentation uses it to predict masks on merged boxes).
        """
        images = self.preprocess_image(batched_inputs)
        x = self._to_memory_format(images.tensor)
        with amp_autocast(self.inference_amp, self.device.type, knob="inference_amp"):
            features = self.backbone(x)
            if detected_instances is None:
                proposals, _ = self.proposal_generator(images, features, None)
                results, _ = self.roi_heads(images, features, proposals, None)
            else:
                if len(detected_instances) != len(batched_inputs):
                    raise ValueError(f"GeneralizedRCNN.inference: {len(detected_instances)} detected_instances for "
                                     f"{len(batched_inputs)} inputs")
                given = [d.to(self.device) for d in detected_instances]
                results = self.roi_heads.forward_with_given_boxes(features, given)
        if self.inference_amp != "none":
            results = [_float32_fields(r) for r in results]
        if not do_postprocess:
            return results
        out = []
        for r, x in zip(results, batched_inputs):
            # outputs go to the original size, by default the size of the image given
            h, w = x.get("height", x["image"].shape[-2]), x.get("width", x["image"].shape[-1])
            out.append({"instances": self.postprocess(r, int(h), int(w))})
        return out

    def postprocess(self, results: Instances, height: int, width: int) -> Instances:
        """Detections at the network's input size -> at ``(height, width)``, masks pasted with
        ``mask_threshold`` / ``mask_paste`` (:func:`~framework.modeling.postprocessing.detector_postprocess`)."""
        return detector_postprocess(results, height, width, mask_threshold=self.mask_threshold,
                                    mask_paste=self.mask_paste)
