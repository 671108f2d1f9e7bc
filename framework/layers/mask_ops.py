"""Paste fixed-size (M x M) predicted masks back into full-image masks at their boxes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from framework.structures.boxes import Boxes

__all__ = ["paste_masks_in_image", "paste_masks_in_image_torchvision", "MASK_PASTERS"]

# Cap on the float32 buffer one GPU chunk may allocate (N_chunk * H * W * 4 bytes).
_BYTES_PER_FLOAT = 4
_GPU_MEM_LIMIT = 1024**3


def _paste_chunk(
    masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int, crop_to_boxes: bool
) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Resample masks (N, 1, M, M) at the image pixels covered by their boxes (N, 4).

    Pixel (x, y) has centre (x + 0.5, y + 0.5); it is mapped into the box's normalised [-1, 1]
    frame and sampled bilinearly (``grid_sample``, align_corners=False, zeros outside the mask),
    which treats the mask as M x M cells exactly spanning the box.

    With ``crop_to_boxes`` only the region bounding all boxes (plus one pixel) is sampled, which
    is what makes pasting cheap on the CPU; the returned slices say where that region lies.

    Returns:
        (N, h, w) float soft masks, and the (row slice, col slice) of the image they cover
        (empty tuple = whole image).
    """
    device = masks.device
    if crop_to_boxes:
        x0_int, y0_int = (boxes.min(dim=0).values.floor()[:2] - 1).clamp(min=0).to(torch.int32).tolist()
        x1_int = int(boxes[:, 2].max().ceil().add(1).clamp(max=img_w))
        y1_int = int(boxes[:, 3].max().ceil().add(1).clamp(max=img_h))
        # Boxes wholly outside the image would give end < start; make that an empty region.
        x1_int, y1_int = max(x1_int, x0_int), max(y1_int, y0_int)
    else:
        x0_int, y0_int, x1_int, y1_int = 0, 0, img_w, img_h
    x0, y0, x1, y1 = boxes.split(1, dim=1)  # each (N, 1)

    ys = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5
    ys = (ys - y0) / (y1 - y0) * 2 - 1  # (N, h)
    xs = (xs - x0) / (x1 - x0) * 2 - 1  # (N, w)

    n = masks.shape[0]
    grid = torch.stack(
        [xs[:, None, :].expand(n, ys.shape[1], xs.shape[1]), ys[:, :, None].expand(n, ys.shape[1], xs.shape[1])],
        dim=3,
    )
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    pasted = F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)[:, 0]
    if crop_to_boxes:
        return pasted, (slice(y0_int, y1_int), slice(x0_int, x1_int))
    return pasted, ()


def _check_paste_args(
    fn: str, masks: torch.Tensor, boxes: torch.Tensor | Boxes, image_shape: tuple[int, int], threshold: float
) -> tuple[torch.Tensor, int, int, torch.dtype]:
    """The checks both pasting rules share: square (N, M, M) masks, one box each. Returns the boxes
    as a (N, 4) tensor, the output (H, W) and dtype (bool, or uint8 soft masks for threshold < 0)."""
    if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"{fn} expects square masks (N, M, M), got shape {tuple(masks.shape)}")
    if isinstance(boxes, Boxes):
        boxes = boxes.tensor
    if len(boxes) != len(masks):
        raise ValueError(f"{fn} got {len(boxes)} boxes for {len(masks)} masks")
    return boxes, int(image_shape[0]), int(image_shape[1]), torch.bool if threshold >= 0 else torch.uint8


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor | Boxes, image_shape: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Paste each M x M mask into an image of ``image_shape`` at its box, as detectron2 does.

    Mask cell (i, j) covers the box sub-rectangle [x0 + j*bw/M, x0 + (j+1)*bw/M) (likewise for rows);
    image pixels are sampled bilinearly at their centres, zero outside the box's mask.

    Args:
        masks: (N, M, M) probabilities in [0, 1] (N, M, M bool/uint8 also accepted).
        boxes: (N, 4) XYXY boxes in image pixels (Tensor or Boxes), ``boxes[i]`` for ``masks[i]``.
        image_shape: (H, W) of the output.
        threshold: pixels with sampled value >= threshold are foreground. A negative threshold
            returns the soft masks as uint8 in [0, 255] instead (for visualisation).

    Returns:
        (N, H, W) bool masks (uint8 if ``threshold < 0``), on the boxes' device.
    """
    boxes, img_h, img_w, out_dtype = _check_paste_args("paste_masks_in_image", masks, boxes, image_shape, threshold)
    n = masks.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros((0, img_h, img_w), dtype=out_dtype, device=device)

    on_cpu = device.type == "cpu"
    if on_cpu:
        # One mask at a time, sampling only around its box: minimal work and memory on CPU.
        num_chunks = n
    else:
        # The GPU prefers big batches over the whole image, bounded by a memory cap.
        num_chunks = min(n, math.ceil(n * img_h * img_w * _BYTES_PER_FLOAT / _GPU_MEM_LIMIT))

    img_masks = torch.zeros(n, img_h, img_w, dtype=out_dtype, device=device)
    masks = masks.to(device)
    for inds in torch.chunk(torch.arange(n, device=device), num_chunks):
        soft, region = _paste_chunk(masks[inds, None], boxes[inds], img_h, img_w, crop_to_boxes=on_cpu)
        if threshold >= 0:
            chunk = soft >= threshold
        else:
            chunk = (soft * 255).to(torch.uint8)
        img_masks[(inds,) + region] = chunk
    return img_masks


def paste_masks_in_image_torchvision(
    masks: torch.Tensor, boxes: torch.Tensor | Boxes, image_shape: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Paste each M x M mask at its box as torchvision's Mask R-CNN does (for its weights' outputs).

    Unlike :func:`paste_masks_in_image`, the mask is first padded by one zero cell on every side and
    the box grown to match (by (M + 2) / M about its centre); the grown box is truncated to integer
    pixels, the padded mask resized to (y1 - y0 + 1, x1 - x0 + 1) pixels with bilinear
    interpolation (``align_corners=False``) and copied into the image where the two overlap.

    Args and returns: as :func:`paste_masks_in_image` (``threshold`` >= 0 gives bool masks of
    ``value >= threshold``; a negative one uint8 soft masks in [0, 255]).
    """
    boxes, img_h, img_w, out_dtype = _check_paste_args(
        "paste_masks_in_image_torchvision", masks, boxes, image_shape, threshold
    )
    out = torch.zeros((len(masks), img_h, img_w), dtype=out_dtype, device=boxes.device)
    if len(masks) == 0:
        return out
    m = masks.shape[-1]
    padded = F.pad(masks.to(device=boxes.device, dtype=torch.float32), (1, 1, 1, 1))
    scale = float(m + 2) / m
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    grown = torch.cat([centre - half, centre + half], dim=1).to(torch.int64).tolist()  # truncation, as torchvision
    for i, (x0, y0, x1, y1) in enumerate(grown):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        xa, xb, ya, yb = max(x0, 0), min(x1 + 1, img_w), max(y0, 0), min(y1 + 1, img_h)
        if xa >= xb or ya >= yb:
            continue
        patch = resized[ya - y0 : yb - y0, xa - x0 : xb - x0]
        out[i, ya:yb, xa:xb] = patch >= threshold if threshold >= 0 else (patch * 255).to(torch.uint8)
    return out


#: Mask pasting rules by name (the ``mask_paste`` knob of the meta-architectures).
MASK_PASTERS = {"detectron2": paste_masks_in_image, "torchvision": paste_masks_in_image_torchvision}
