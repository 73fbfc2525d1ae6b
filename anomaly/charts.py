"""Scores over time: the window timeline of one recording, the rolling timeline of a live session (raster
pictures) and the batch's trend in upload order (an SVG fragment), all on the log score scale.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from anomaly.plots import (
    FONT_PX,
    GRID,
    INK,
    LABEL_COLOURS,
    MUTED,
    PICTURE_WIDTH_PX,
    TIMELINE_HEIGHT_PX,
    dashed_hline,
    draw_vertical_title,
    format_score,
    log_ticks,
    pil_font,
    scale_position,
    score_scale,
    svg_chart_open,
    svg_num,
    svg_score_axes,
    text_width,
    time_axis,
    zone_colour,
)
from anomaly.scoring import LABELS, UNFAMILIAR, Thresholds


def window_timeline(
    window_times_s: np.ndarray,
    window_scores: np.ndarray,
    thresholds: Thresholds,
    window_seconds: float,
    *,
    width_px: int = PICTURE_WIDTH_PX,
    height_px: int = TIMELINE_HEIGHT_PX,
    time_range_s: tuple[float, float] | None = None,
    xlabel: str = "time (s)",
    familiar: bool | Sequence[bool] = True,
) -> np.ndarray:
    """Score of every analysis window over time, coloured by the label it would get on its own (grey bars and
    threshold lines, like the verdict, when ``familiar=False``: the verdict is unfamiliar, and its scores
    measure an unknown machine). ``familiar`` may also say it window by window (live readings): then the
    unfamiliar windows' bars are grey.

    One bar per window, centred on it (windows overlap, so bars are drawn narrower than the window);
    dashed lines mark the two thresholds, named in a legend at the top. Scores are on a log scale
    (``score_scale``); a score beyond its cap reaches the top with a triangle and its value. The clip's
    score is the highest bar. ``time_range_s`` fixes the x axis (a rolling view of the last minute); by
    default it runs from 0 to the end of the last window.

    Returns
    -------
    ``(height_px, width_px, 3)`` uint8 RGB.
    """
    times = np.asarray(window_times_s, dtype=np.float64).reshape(-1)
    scores = np.asarray(window_scores, dtype=np.float64).reshape(-1)
    if times.shape != scores.shape:
        raise ValueError(f"{len(times)} window times for {len(scores)} scores")
    each_familiar = np.broadcast_to(np.asarray(familiar, dtype=bool), scores.shape)
    # The threshold lines are grey only when no window is familiar (``familiar=False``: an unfamiliar verdict).
    lines_familiar = bool(each_familiar.any()) if len(scores) else bool(np.all(familiar))
    end = float(times.max() + window_seconds) if len(times) else window_seconds
    t0, t1 = time_range_s or (0.0, end)
    if not t1 > t0:
        t1 = t0 + window_seconds
    # The scale fits the windows in view: a spike that has scrolled out of the live minute lets go of it.
    low, high = score_scale(thresholds, scores[(times + window_seconds > t0) & (times < t1)])

    font = pil_font(FONT_PX)
    legend_top = 8
    top = legend_top + FONT_PX + 8 + 16  # the legend, then room for an off-the-scale triangle
    bottom = 2 * FONT_PX + 24
    max_y_ticks = max(2, (height_px - top - bottom) // (FONT_PX + 8))
    y_ticks = log_ticks(low, high, max_y_ticks)
    left = 8 + FONT_PX + 8 + max((text_width(f"{v:g}") for v in y_ticks), default=0) + 14
    right = 26
    plot_w, plot_h = width_px - left - right, height_px - top - bottom
    if plot_w < 40 or plot_h < 40:
        raise ValueError(f"a {width_px} x {height_px} picture leaves no room for the timeline")
    plot_right, plot_bottom = left + plot_w, top + plot_h

    def x_of(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y_of(value: float) -> int:
        return round(plot_bottom - scale_position(value, low, high) * plot_h)

    canvas = Image.new("RGB", (width_px, height_px), "white")
    draw = ImageDraw.Draw(canvas)
    for value in y_ticks:
        y = y_of(value)
        draw.line([(left, y), (plot_right, y)], fill=GRID, width=1)
        draw.line([(left - 7, y), (left - 1, y)], fill=INK, width=2)
        draw.text((left - 11, y), f"{value:g}", font=font, fill=INK, anchor="rm")

    hop = float(np.min(np.diff(np.sort(times)))) if len(times) > 1 else window_seconds
    # Pieces that nearly coincide (a user reference scores a 10 s clip as two overlapping segments) share
    # one wide bar rather than drawing hairlines.
    spacing = min(max(hop, 0.5 * window_seconds), window_seconds)
    half_px = max(1.0, 0.4 * spacing / (t1 - t0) * plot_w)
    overflow = []
    for start, score, known in zip(times, scores, each_familiar, strict=True):
        if not np.isfinite(score):
            continue
        centre = x_of(start + window_seconds / 2)
        x0, x1 = max(round(centre - half_px), left), min(round(centre + half_px) - 1, plot_right)
        if x1 < x0:
            continue  # outside the time range
        colour = zone_colour(score, thresholds) if known else MUTED
        # A score at or below the bottom of the scale still gets a stub, so that every window shows.
        draw.rectangle([x0, min(y_of(score), plot_bottom - 3), x1, plot_bottom], fill=colour)
        if score > high:
            overflow.append((x0, x1, score, colour))

    line_colours = LABEL_COLOURS if lines_familiar else {label: MUTED for label in LABELS}
    for value, label in ((thresholds.maintenance, LABELS[1]), (thresholds.severe, LABELS[2])):
        dashed_hline(draw, left, plot_right, y_of(value), line_colours[label])
    draw.line([(left, top), (left, plot_bottom)], fill=INK, width=2)
    draw.line([(left, plot_bottom), (plot_right, plot_bottom)], fill=INK, width=2)

    # An off-the-scale bar gets a triangle above it and its value beside it (inside it when no side has room).
    for x0, x1, score, colour in overflow:
        x = (x0 + x1) // 2
        draw.polygon([(x - 8, top - 2), (x + 8, top - 2), (x, top - 15)], fill=colour)
        text = format_score(score)
        width = text_width(text)
        if x1 + 8 + width <= plot_right:
            tx, fill = x1 + 8, colour
        elif x0 - 8 - width >= left:
            tx, fill = x0 - 8 - width, colour
        else:
            tx, fill = x - width // 2, "white"
        if fill != "white":
            draw.rectangle([tx - 3, top + 2, tx + width + 3, top + FONT_PX + 6], fill="white")
        draw.text((tx, top + 4), text, font=font, fill=fill, anchor="lt")

    # Legend at the top left: the app shows no label over the picture, and its buttons sit at the top right.
    items = [
        (f"{name} {format_score(value)}", line_colours[label])
        for name, value, label in (
            ("maintenance", thresholds.maintenance, LABELS[1]),
            ("severe", thresholds.severe, LABELS[2]),
        )
    ]
    # It starts at the left edge, so that it ends before the app's buttons over the top-right corner.
    swatch, gap = 26, 6
    x = 8
    y = legend_top + FONT_PX // 2 + 2
    for text, colour in items:
        dashed_hline(draw, x, x + swatch, y, colour, dash=8, gap=3)
        x += swatch + gap
        draw.text((x, y), text, font=font, fill=INK, anchor="lm")
        x += text_width(text) + 18

    draw_vertical_title(canvas, "score", 8, top + plot_h // 2)
    time_axis(draw, left, plot_right, plot_bottom, t0, t1, xlabel, height_px)
    return np.array(canvas)


def live_timeline(
    window_starts_s: np.ndarray,
    window_scores: np.ndarray,
    thresholds: Thresholds,
    window_seconds: float,
    *,
    now_s: float,
    span_s: float = 60.0,
    familiar: bool | Sequence[bool] = True,
) -> np.ndarray:
    """The rolling timeline of a live session: the last ``span_s`` seconds of window scores, thresholds drawn
    (an unfamiliar reading's bar grey, as its verdict).

    The x axis is fixed at ``span_s`` wide (from 0 until that much has been heard, then sliding with
    ``now_s``), so that the bars do not stretch as they arrive.
    """
    time_range = (max(0.0, now_s - span_s), max(now_s, span_s))
    return window_timeline(
        window_starts_s,
        window_scores,
        thresholds,
        window_seconds,
        time_range_s=time_range,
        xlabel="seconds of listening",
        familiar=familiar,
    )


# --- the batch trend (SVG) ---------------------------------------------------------------------------

# In viewBox units. Shown 330 to 390 px wide on a phone the text is 12 to 14 px; on a desktop the SVG stops
# growing at TREND_MAX_PX, where it is 26 px.
TREND_WIDTH, TREND_HEIGHT = 520, 270
TREND_FONT = 19
TREND_MAX_PX = 720


def batch_trend_svg(
    names: list[str],
    scores: list[float | None],
    thresholds: Thresholds,
    labels: list[str | None] | None = None,
) -> str:
    """The batch's scores in upload order as an inline SVG (``viewBox``, 100 % wide) for ``gr.HTML``.

    x is the file's place in the batch (1..N), y its score on the log scale of ``score_scale``; the two
    thresholds are dashed lines, named with their values in a legend above the plot; points take the colour
    of their zone, and a score beyond the cap is a triangle at the top. Files that failed (score None) are
    grey crosses on the x axis. ``labels`` (optional, one per file, as the table shows them) makes a file
    whose verdict is not one of the three levels (unfamiliar) a grey point, as the table's grey cell.
    Every point's ``<title>`` says "file name: score (LABEL)" (or "file name: failed"), which browsers show
    when the pointer is anywhere in the file's column.

    Classes: ``trend`` (the ``<svg>``), ``trend-point`` (one ``<g>`` per file, with ``trend-failed`` for
    a failure), ``trend-threshold``.
    """
    if len(names) != len(scores) or (labels is not None and len(labels) != len(names)):
        raise ValueError(f"{len(names)} names for {len(scores)} scores and {len(labels or names)} labels")
    n = len(names)
    values = [float(s) if s is not None and math.isfinite(s) else None for s in scores]
    low, high = score_scale(thresholds, [v for v in values if v is not None])
    W, H, F = TREND_WIDTH, TREND_HEIGHT, TREND_FONT
    top, bottom = 12 + F + 14, 2 * F + 22
    plot_h = H - top - bottom
    y_ticks = log_ticks(low, high, max(2, plot_h // (F + 10)))
    left = 12 + F + 6 + max(len(f"{v:g}") for v in y_ticks) * 0.58 * F + 10
    right = 12
    plot_w = W - left - right
    plot_bottom, plot_right = top + plot_h, left + plot_w
    inset = 14  # first and last points clear of the axes

    def x_of(i: int) -> float:  # i from 1
        return left + plot_w / 2 if n == 1 else left + inset + (i - 1) / (n - 1) * (plot_w - 2 * inset)

    def y_of(value: float) -> float:
        return plot_bottom - scale_position(value, low, high) * plot_h

    f = svg_num
    text = f'font-size="{F}" fill="currentColor"'
    aria = f"Scores of {n} file{'s' if n != 1 else ''} in upload order"
    parts = [svg_chart_open("trend", W, H, TREND_MAX_PX, aria)]
    parts += svg_score_axes(left, top, plot_right, plot_bottom, y_ticks, y_of, F)
    steps = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9)
    step = next(s for s in steps if n / s <= plot_w / 45)
    for i in sorted({1, *range(step, n + 1, step)} if n else set()):
        parts.append(
            f'<text x="{f(x_of(i))}" y="{f(plot_bottom + 6)}" {text} text-anchor="middle" '
            f'dominant-baseline="hanging">{i}</text>'
        )
    parts.append(
        f'<text x="{f(left + plot_w / 2)}" y="{H - 4}" {text} text-anchor="middle">'
        "file, in upload order</text>"
        f'<text transform="translate({12 + F * 0.8} {f(top + plot_h / 2)}) rotate(-90)" {text} '
        f'text-anchor="middle">score</text>'
    )

    # A faint line through consecutive scored files shows the drift; a failed file breaks it.
    path, pen_down = [], False
    for i, v in enumerate(values, start=1):
        if v is None:
            pen_down = False
            continue
        path.append(f"{'L' if pen_down else 'M'}{f(x_of(i))} {f(min(y_of(v), plot_bottom))}")
        pen_down = True
    if len(path) > 1:
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{MUTED}" stroke-opacity="0.5" '
            f'stroke-width="1.5"/>'
        )

    # Named in a legend above the plot rather than beside their lines: close thresholds would put the two
    # names on top of each other, and names inside the plot would hide points.
    legend_y = 6 + F / 2
    for k, (value, name, label) in enumerate(
        ((thresholds.maintenance, "maintenance", LABELS[1]), (thresholds.severe, "severe", LABELS[2]))
    ):
        y, x = y_of(value), left + k * plot_w / 2
        parts.append(
            f'<g class="trend-threshold" data-threshold="{name}">'
            f'<line x1="{f(left)}" x2="{f(plot_right)}" y1="{f(y)}" y2="{f(y)}" '
            f'stroke="{LABEL_COLOURS[label]}" stroke-width="2" stroke-dasharray="8 5"/>'
            f'<line x1="{f(x)}" x2="{f(x + 30)}" y1="{f(legend_y)}" y2="{f(legend_y)}" '
            f'stroke="{LABEL_COLOURS[label]}" stroke-width="3" stroke-dasharray="8 3"/>'
            f'<text x="{f(x + 38)}" y="{f(legend_y)}" {text} dominant-baseline="middle">'
            f"{name} {format_score(value)}</text></g>"
        )

    radius = min(6.0, max(2.5, 0.35 * (plot_w - 2 * inset) / max(n - 1, 1)))
    # A point is small; its whole column, top to bottom, answers the pointer with the file's name.
    column = (plot_w - 2 * inset) / max(n - 1, 1) if n > 1 else plot_w
    for i, (name, v, shown) in enumerate(zip(names, values, labels or [None] * n, strict=True), start=1):
        x = x_of(i)
        hit = (
            f'<rect x="{f(x - column / 2)}" y="{top}" width="{f(column)}" height="{f(plot_h)}" '
            f'fill="transparent"/>'
        )
        if v is None:
            r = radius
            cross = (
                f'<path d="M{f(x - r)} {f(plot_bottom - r)}l{f(2 * r)} {f(2 * r)}m0 {f(-2 * r)}'
                f'l{f(-2 * r)} {f(2 * r)}" stroke="{MUTED}" stroke-width="2.5"/>'
            )
            parts.append(
                f'<g class="trend-point trend-failed" data-index="{i}">'
                f"<title>{html.escape(str(name))}: failed</title>{hit}{cross}</g>"
            )
            continue
        label = thresholds.label(v)
        colour = LABEL_COLOURS[label]
        if shown is not None and shown not in LABELS:  # unfamiliar: no severity, grey as in the table
            label, colour = UNFAMILIAR, MUTED
        if v > high:
            r = radius + 1
            shape = (
                f'<path d="M{f(x)} {top - 2}l{f(r)} {f(1.8 * r)}h{f(-2 * r)}z" fill="{colour}" '
                f'stroke="#fff" stroke-width="1"/>'
            )
        else:
            shape = (
                f'<circle cx="{f(x)}" cy="{f(y_of(v))}" r="{f(radius)}" fill="{colour}" stroke="#fff" '
                f'stroke-width="1"/>'
            )
        parts.append(
            f'<g class="trend-point" data-index="{i}" data-zone="{label}">'
            f"<title>{html.escape(str(name))}: {format_score(v)} ({label})</title>{hit}{shape}</g>"
        )
    if n == 0:
        parts.append(
            f'<text x="{f(left + plot_w / 2)}" y="{f(top + plot_h / 2)}" {text} text-anchor="middle" '
            f'fill-opacity="0.6">no files yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
