"""Small charts drawn with Pillow (a dependency already), for reports written next to a run: no
plotting library needed."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["font", "horizontal_bars", "line_panels", "error_bar_panels", "palette"]

Color = tuple[int, int, int]


def font(size: int) -> ImageFont.ImageFont:
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
    big, small = font(14), font(12)
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
        draw.text((pad, 6), title, fill="black", font=big)
    for k, (name, groups) in enumerate(panels):
        x0 = k * panel_w + pad
        draw.text((x0, title_h), name, fill="black", font=big)
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


#: Distinct line colours (Tableau 10), cycled by :func:`palette` beyond ten.
TABLEAU = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def palette(n: int) -> list[Color]:
    """``n`` line colours: Tableau 10 for up to ten, evenly spaced hues beyond (80 COCO classes)."""
    if n <= len(TABLEAU):
        return TABLEAU[:n]
    import colorsys

    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / n, 0.75, 0.85)) for k in range(n)]  # type: ignore[misc]


def _plot_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], *, x_range: tuple[float, float],
              y_range: tuple[float, float], x_ticks: Sequence[float], y_ticks: Sequence[float], face: ImageFont.ImageFont,
              x_label: str = "", y_label: str = "", tick_format: str = "{:g}") -> Callable[[float, float], tuple[float, float]]:
    """Axes with ticks in ``box`` (left, top, right, bottom pixels); returns data -> pixel."""
    left, top, right, bottom = box
    (x0, x1), (y0, y1) = x_range, y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle(box, outline="black")
    for t in x_ticks:
        px, _ = to_px(t, y0)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.line([px, top, px, bottom], fill=(232, 232, 232))
        draw.text((px - 8, bottom + 6), tick_format.format(t), fill="black", font=face)
    for t in y_ticks:
        _, py = to_px(x0, t)
        draw.line([left - 4, py, left, py], fill="black")
        draw.line([left, py, right, py], fill=(232, 232, 232))
        draw.text((left - 34, py - 7), tick_format.format(t), fill="black", font=face)
    draw.rectangle(box, outline="black")
    if x_label:
        draw.text(((left + right) // 2 - 20, bottom + 22), x_label, fill="black", font=face)
    if y_label:
        draw.text((left - 34, top - 20), y_label, fill="black", font=face)
    return to_px


def line_panels(
    panels: Sequence[tuple[str, Sequence[tuple[Sequence[float], Sequence[float], Color, int]]]],
    *,
    title: str = "",
    legend: Sequence[tuple[str, Color]] = (),
    x_label: str = "",
    y_label: str = "",
    x_range: tuple[float, float] = (0.0, 1.0),
    y_range: tuple[float, float] = (0.0, 1.0),
    plot_size: tuple[int, int] = (260, 220),
    legend_columns: int = 4,
) -> Image.Image:
    """Line plots side by side on the same axes ranges (e.g. precision-recall curves per area range).

    Args:
        panels: ``[(panel title, [(xs, ys, rgb, line width), ...]), ...]``; non-finite points
            split a line.
        legend: ``[(label, rgb), ...]`` drawn under the panels, ``legend_columns`` per row.
        x_range, y_range: the axes (ticks at 0, 1/4, ..., 1 of each range).
        plot_size: pixels of each panel's plotting area.

    Returns:
        An RGB image.
    """
    big, small = font(14), font(12)
    pad_left, pad_right, pad_top, pad_bottom = 44, 14, 46, 44
    pw, ph = plot_size
    panel_w = pad_left + pw + pad_right
    title_h = 26 if title else 4
    legend_rows = math.ceil(len(legend) / legend_columns) if legend else 0
    width = max(panel_w * max(1, len(panels)), 40 + legend_columns * 170 if legend else 0)
    height = title_h + pad_top + ph + pad_bottom + legend_rows * 18 + (8 if legend else 0)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((10, 6), title, fill="black", font=big)
    ticks = lambda lo, hi: [lo + (hi - lo) * k / 4 for k in range(5)]  # noqa: E731
    for k, (name, lines) in enumerate(panels):
        left = k * panel_w + pad_left
        top = title_h + pad_top
        draw.text((left, title_h + 8), name, fill="black", font=small)
        to_px = _plot_box(draw, (left, top, left + pw, top + ph), x_range=x_range, y_range=y_range,
                          x_ticks=ticks(*x_range), y_ticks=ticks(*y_range), face=small, x_label=x_label,
                          y_label=y_label)
        for xs, ys, color, line_width in lines:
            segment: list[tuple[float, float]] = []
            for x, y in [*zip(xs, ys), (math.nan, math.nan)]:
                if math.isfinite(x) and math.isfinite(y):
                    segment.append(to_px(x, y))
                    continue
                if len(segment) > 1:
                    draw.line(segment, fill=tuple(color), width=line_width, joint="curve")
                segment = []
    y = title_h + pad_top + ph + pad_bottom
    for j, (label, color) in enumerate(legend):
        x = 10 + (j % legend_columns) * 170
        row_y = y + (j // legend_columns) * 18
        draw.rectangle([x, row_y + 4, x + 14, row_y + 12], fill=tuple(color))
        draw.text((x + 18, row_y), label, fill="black", font=small)
    return image


def error_bar_panels(
    panels: Sequence[tuple[str, Sequence[tuple[str, float, float, Sequence[float]]]]],
    *,
    title: str = "",
    y_label: str = "",
    colors: Sequence[Color] = (),
    footer: Sequence[str] = (),
    plot_height: int = 240,
    slot: int = 90,
) -> Image.Image:
    """Per panel, one column per group: its values as small dots, its mean as a diamond and the
    mean +- spread as an error bar (e.g. AP per variant over seeds).

    Args:
        panels: ``[(panel title, [(group label, mean, spread, values), ...]), ...]``; a NaN spread
            draws no bar.
        colors: one per group (default: :func:`palette`).
        footer: lines of text under the panels (e.g. what each short group label stands for).
        slot: pixels per group along x. Each panel's y axis spans its values and bars (rounded
            out to multiples of 5).

    Returns:
        An RGB image.
    """
    big, small = font(14), font(12)

    def y_range(groups: Sequence[tuple[str, float, float, Sequence[float]]]) -> tuple[int, int]:
        numbers = [v for _, mean, spread, values in groups
                   for v in (*values, mean - (spread if math.isfinite(spread) else 0), mean + (spread if math.isfinite(spread) else 0))
                   if math.isfinite(v)]
        lo = math.floor(min(numbers, default=0.0) / 5) * 5
        return lo, max(lo + 5, math.ceil(max(numbers, default=5.0) / 5) * 5)

    n_groups = max((len(g) for _, g in panels), default=1)
    pad_left, pad_right, pad_top, pad_bottom = 48, 16, 46, 60
    pw = slot * n_groups
    panel_w = pad_left + pw + pad_right
    title_h = 26 if title else 4
    footer_h = 18 * len(footer) + (8 if footer else 0)
    width = max(panel_w * max(1, len(panels)), 20 + 7 * max((len(line) for line in footer), default=0))
    image = Image.new("RGB", (width, title_h + pad_top + plot_height + pad_bottom + footer_h), "white")
    draw = ImageDraw.Draw(image)
    for j, line in enumerate(footer):
        draw.text((10, title_h + pad_top + plot_height + pad_bottom + 18 * j), line, fill="black", font=small)
    if title:
        draw.text((10, 6), title, fill="black", font=big)
    colors = list(colors) or palette(n_groups)
    for k, (name, groups) in enumerate(panels):
        left, top = k * panel_w + pad_left, title_h + pad_top
        lo, hi = y_range(groups)
        draw.text((left, title_h + 8), name, fill="black", font=small)
        y_ticks = [lo + (hi - lo) * j / 4 for j in range(5)]
        to_px = _plot_box(draw, (left, top, left + pw, top + plot_height), x_range=(0.0, float(n_groups)),
                          y_range=(float(lo), float(hi)), x_ticks=[], y_ticks=y_ticks, face=small, y_label=y_label,
                          tick_format="{:.4g}")
        for g, (label, mean, spread, values) in enumerate(groups):
            color = tuple(colors[g % len(colors)])
            cx, _ = to_px(g + 0.5, lo)
            for v in values:
                if math.isfinite(v):
                    _, py = to_px(0, v)
                    draw.ellipse([cx + 8, py - 3, cx + 14, py + 3], fill=color)
            if math.isfinite(mean):
                if math.isfinite(spread):
                    _, y_top = to_px(0, mean + spread)
                    _, y_bottom = to_px(0, mean - spread)
                    draw.line([cx, y_top, cx, y_bottom], fill=color, width=2)
                    draw.line([cx - 6, y_top, cx + 6, y_top], fill=color, width=2)
                    draw.line([cx - 6, y_bottom, cx + 6, y_bottom], fill=color, width=2)
                _, py = to_px(0, mean)
                draw.polygon([(cx, py - 6), (cx + 6, py), (cx, py + 6), (cx - 6, py)], fill=color)
                draw.text((cx - 18, top + plot_height + 22), f"{mean:.2f}", fill="black", font=small)
            draw.text((cx - 4 * min(len(label), slot // 8), top + plot_height + 6), label[: slot // 8], fill=color,
                      font=small)
    return image
