"""Small charts drawn with Pillow (a dependency already), for reports written next to a run: no
plotting library needed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["horizontal_bars"]

Color = tuple[int, int, int]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (TypeError, OSError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_max(value: float, step: float = 5.0) -> float:
    """``value`` rounded up to a multiple of ``step`` (at least ``step``)."""
    return max(step, math.ceil(value / step) * step) if math.isfinite(value) else step


def horizontal_bars(
    panels: Sequence[tuple[str, Sequence[Sequence[tuple[str, float]]]]],
    *,
    colors: Mapping[str, Color],
    title: str = "",
    axis_label: str = "",
    bar_area: int = 260,
) -> Image.Image:
    """Panels side by side, each a list of bar groups (a gap between groups), one labelled bar per value.

    Args:
        panels: ``[(panel title, [[(label, value), ...], ...]), ...]``; values >= 0 (NaN is drawn
            as "n/a", a negative value as a zero-length bar with its number).
        colors: label -> RGB of its bar (grey if absent).
        title: above the panels; axis_label: below each panel's scale.
        bar_area: pixel width of the longest possible bar. All panels share one scale, rounded up
            to a multiple of 5, so that bars compare across panels.

    Returns:
        An RGB image.
    """
    font, small = _font(14), _font(12)
    values = [v for _, groups in panels for group in groups for _, v in group if math.isfinite(v)]
    top = _nice_max(max(values, default=0.0))
    label_w, value_w, row_h, gap, pad = 50, 52, 22, 10, 12
    panel_w = label_w + bar_area + value_w + 2 * pad
    rows = max((sum(len(g) for g in groups) * row_h + (len(groups) - 1) * gap for _, groups in panels), default=0)
    title_h = 28 if title else 6
    height = title_h + 22 + rows + 40
    image = Image.new("RGB", (panel_w * max(1, len(panels)), height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((pad, 6), title, fill="black", font=font)
    for k, (name, groups) in enumerate(panels):
        x0 = k * panel_w + pad
        draw.text((x0, title_h), name, fill="black", font=font)
        y = title_h + 22
        bar_x = x0 + label_w
        for g, group in enumerate(groups):
            for label, value in group:
                draw.text((x0, y + 3), label, fill="black", font=small)
                if math.isfinite(value):
                    length = round(bar_area * max(value, 0.0) / top)
                    draw.rectangle([bar_x, y + 3, bar_x + length, y + row_h - 3], fill=colors.get(label, (128, 128, 128)))
                    text = f"{value:.2f}"
                else:
                    length, text = 0, "n/a"
                draw.text((bar_x + length + 4, y + 3), text, fill="black", font=small)
                y += row_h
            y += gap if g < len(groups) - 1 else 0
        # The shared scale: an axis with ticks at 0, top / 2 and top.
        axis_y = title_h + 22 + rows + 4
        draw.line([bar_x, axis_y, bar_x + bar_area, axis_y], fill="black")
        for fraction in (0.0, 0.5, 1.0):
            tx = bar_x + round(bar_area * fraction)
            draw.line([tx, axis_y, tx, axis_y + 4], fill="black")
            draw.text((tx - 8, axis_y + 6), f"{top * fraction:g}", fill="black", font=small)
        if axis_label:
            draw.text((bar_x + bar_area // 2 - 20, axis_y + 20), axis_label, fill="black", font=small)
    return image
