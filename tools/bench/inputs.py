"""What the benchmark feeds both models: a COCO image (or a generated one) and a training batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["REPO", "COCO_TINY", "benchmark_image", "training_batch"]

REPO = Path(__file__).resolve().parents[2]
COCO_TINY = REPO.parent / "shared" / "data" / "coco_tiny"


def benchmark_image() -> tuple[Any, str]:
    """A COCO image (RGB uint8 (3, H, W)) and where it came from."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted((COCO_TINY / "val2017").glob("*.jpg"))
    if files:
        from framework.data.detection_utils import read_image

        return read_image(files[0], "RGB"), str(files[0].relative_to(REPO.parent))
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(small).resize((640, 480), Image.BICUBIC))
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), "generated 480x640"


def training_batch(num_images: int = 2, size: tuple[int, int] = (512, 768), boxes_per_image: int = 8):
    """Generated images with ``boxes_per_image`` boxes and rectangle masks each: (images uint8,
    boxes (B, 4) float, classes (B,) in 0..89, masks (B, H, W) bool) per image."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = size
    out = []
    for _ in range(num_images):
        image = (torch.rand(3, h // 16, w // 16, generator=g) * 255)
        image = torch.nn.functional.interpolate(image[None], size=(h, w), mode="bilinear")[0].to(torch.uint8)
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 32 + torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        boxes = torch.cat([xy, xy + wh], dim=1).round()
        classes = torch.randint(0, 90, (boxes_per_image,), generator=g)
        masks = torch.zeros(boxes_per_image, h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
            m[y0:y1, x0:x1] = True
        out.append((image, boxes, classes, masks))
    return out
