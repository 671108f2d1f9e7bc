"""Image files broken in the three ways that only show when the file is read, for the bad-data tests.

Imported by name (``from bad_images import BAD_IMAGES``): pytest puts ``tests/`` on ``sys.path``.
Each writer turns ``path`` into a bad version of a ``width`` x ``height`` image of its dataset dict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from framework.data.detection_utils import ImageReadError, ImageSizeMismatchError


class BadImage(NamedTuple):
    write: Callable[[Path, int, int], None]  # (path, width, height) -> the bad file at path
    error: type[Exception]  # what reading it raises under bad_data=strict
    message: str  # a fragment of that error's message


def _not_an_image(path: Path, width: int, height: int) -> None:
    path.write_bytes(b"these bytes are not an image in any format")


def _png_truncated_to_half(path: Path, width: int, height: int) -> None:
    # Noise, so that the pixel data is most of the file and the cut lands inside it.
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _one_pixel_wider(path: Path, width: int, height: int) -> None:
    Image.new("RGB", (width + 1, height), (30, 60, 90)).save(path, format="PNG")


#: kind -> how to write it, the error under strict, and a fragment of its message (for a 40x30 image).
BAD_IMAGES = {
    "not an image": BadImage(_not_an_image, ImageReadError, "cannot identify image file"),
    "PNG truncated to half": BadImage(_png_truncated_to_half, ImageReadError, "image file is truncated"),
    "another size than the json": BadImage(_one_pixel_wider, ImageSizeMismatchError,
                                           "decodes to height x width = 30x41, but its dataset dict says 30x40"),
}
