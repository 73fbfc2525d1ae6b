"""What every picture of an analysis shares: the label colours, the magma colour table, the log score scale
and its ticks, and the raster helpers (fonts, axes) of the Pillow-drawn pictures.

The pictures themselves: ``anomaly.spectrogram_plot`` (the spectrogram with its anomaly map),
``anomaly.charts`` (the window and live timelines, the batch's trend) and ``anomaly.gauge`` (the score
gauge). The spectrogram and the timelines are RGB ``uint8`` arrays of shape ``(height, width, 3)``, ready for
``gr.Image`` or ``PIL.Image.fromarray``. They are drawn with numpy and Pillow (a colour lookup table, a
resize, ``ImageDraw`` for axes and text), not matplotlib figures: a picture takes a few milliseconds instead
of fifty, and nothing is shared between calls, so drawing is safe from the app's worker threads. The score
gauge and the batch trend are HTML and SVG fragments for ``gr.HTML``: the browser lays them out at any width.

Scores are drawn on a log scale (``score_scale``): real scores run from a tenth of the maintenance threshold
to tens of times the severe one, and on a linear scale the two thresholds, often close, merge into one line.

Colours follow the three labels: green for NORMAL, amber for NEEDS MAINTENANCE, red for SEVERE ANOMALY
(``LABEL_COLOURS``).

Examples
--------
>>> from anomaly.scoring import Thresholds
>>> zone_colour(8.0, Thresholds(10.0, 12.0)) == LABEL_COLOURS["NORMAL"]
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from anomaly.scoring import LABELS, Thresholds

LABEL_COLOURS = {
    LABELS[0]: "#2e9d5b",  # green
    LABELS[1]: "#f0a30a",  # amber
    LABELS[2]: "#d64541",  # red
}
ZONE_NAMES = {LABELS[0]: "Normal", LABELS[1]: "Needs maintenance", LABELS[2]: "Severe"}
INK = "#1f2933"
MUTED = "#6b7785"
# The zones drawn for an unfamiliar verdict: the thresholds still show, but no zone has a severity's colour.
NEUTRAL_ZONE_COLOURS = {LABELS[0]: "#e4e7eb", LABELS[1]: "#cbd2d9", LABELS[2]: "#b0b9c3"}
GRID = "#e4e7eb"

# The raster pictures' size and text. A phone at 390 px shows them about 326 px wide, where 24 px of a
# 600 px picture become 13 px (12 px is the least asked for); at 900 px wide the same text was 9 px.
PICTURE_WIDTH_PX = 600
TIMELINE_HEIGHT_PX, SPECTROGRAM_HEIGHT_PX = 250, 320
FONT_PX = 24
SMALL_FONT_PX = 23
# The app's buttons (full screen, download, share) sit over the picture's top-right corner, about 30 px
# high on the screen: 56 px of a picture shown 326 px wide on a phone.
TOP_BAND_PX = 56
BUTTONS_PX = 150  # how far the buttons reach in from the right, in picture pixels
# How far the log scale reaches (``score_scale``), in multiples of the thresholds.
SCALE_BELOW_MAINTENANCE = 4.0
SCALE_ABOVE_SEVERE = 4.0
SCALE_CAP_SEVERE = 50.0  # beyond this a score is drawn off the scale rather than squashing the rest
SCALE_FLOOR_SEVERE = 1e-3
SCALE_HEADROOM = 1.3


def _sample_magma() -> np.ndarray:
    # matplotlib's "magma", sampled at 256 points and rounded to uint8 (tests/test_package.py checks it
    # against matplotlib): importing matplotlib for one table cost the CLI and the app's start about 0.3 s.
    table = (
        "00000401000501010601010802010902020b02020d03030f03031204041405041606051806051a07061c08071e090720"
        "0a08220b09240c09260d0a290e0b2b100b2d110c2f120d31130d34140e36150e38160f3b180f3d19103f1a10421c1044"
        "1d11471e114920114b21114e22115024125325125527125829115a2a115c2c115f2d11612f1163311165331067341069"
        "36106b38106c390f6e3b0f703d0f713f0f72400f74420f75440f764510774710784910784a10794c117a4e117b4f127b"
        "51127c52137c54137d56147d57157e59157e5a167e5c167f5d177f5f187f601880621980641a80651a80671b80681c81"
        "6a1c816b1d816d1d816e1e81701f81721f817320817521817621817822817922827b23827c23827e2482802582812581"
        "8326818426818627818827818928818b29818c29818e2a81902a81912b81932b80942c80962c80982d80992d809b2e7f"
        "9c2e7f9e2f7fa02f7fa1307ea3307ea5317ea6317da8327daa337dab337cad347cae347bb0357bb2357bb3367ab5367a"
        "b73779b83779ba3878bc3978bd3977bf3a77c03a76c23b75c43c75c53c74c73d73c83e73ca3e72cc3f71cd4071cf4070"
        "d0416fd2426fd3436ed5446dd6456cd8456cd9466bdb476adc4869de4968df4a68e04c67e24d66e34e65e44f64e55064"
        "e75263e85362e95462ea5661eb5760ec5860ed5a5fee5b5eef5d5ef05f5ef1605df2625df2645cf3655cf4675cf4695c"
        "f56b5cf66c5cf66e5cf7705cf7725cf8745cf8765cf9785df9795df97b5dfa7d5efa7f5efa815ffb835ffb8560fb8761"
        "fc8961fc8a62fc8c63fc8e64fc9065fd9266fd9467fd9668fd9869fd9a6afd9b6bfe9d6cfe9f6dfea16efea36ffea571"
        "fea772fea973feaa74feac76feae77feb078feb27afeb47bfeb67cfeb77efeb97ffebb81febd82febf84fec185fec287"
        "fec488fec68afec88cfeca8dfecc8ffecd90fecf92fed194fed395fed597fed799fed89afdda9cfddc9efddea0fde0a1"
        "fde2a3fde3a5fde5a7fde7a9fde9aafdebacfcecaefceeb0fcf0b2fcf2b4fcf4b6fcf6b8fcf7b9fcf9bbfcfbbdfcfdbf"
    )
    return np.frombuffer(bytes.fromhex(table), dtype=np.uint8).reshape(256, 3)


MAGMA = _sample_magma()  # (256, 3) uint8: dB scaled to 0..255 indexes it


def _rgb(colour: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(colour)[:3]


def zone_colour(score: float, thresholds: Thresholds) -> str:
    """The colour of the label a score gets under ``thresholds``."""
    return LABEL_COLOURS[thresholds.label(score)]


def format_score(value: float) -> str:
    """A score as the pictures print it: two decimals below 10, one below 100, none below 100 000, then
    powers of ten (a broken recording can score in the millions, and the number must fit a phone)."""
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:.0f}" if abs(value) < 1e5 else f"{value:.1e}"


# --- the log score scale -------------------------------------------------------------------------------


def score_scale(
    thresholds: Thresholds, scores: Sequence[float | None] | np.ndarray = ()
) -> tuple[float, float]:
    """Ends ``(low, high)`` of the log scale on which the gauge, the timelines and the trend draw scores.

    From a quarter of the maintenance threshold to four times the severe one, widened to show every finite
    score with some room (a factor ``SCALE_HEADROOM``), but never above ``SCALE_CAP_SEVERE`` times the
    severe threshold (higher scores are drawn off the scale) nor below ``SCALE_FLOOR_SEVERE`` times it.
    """
    severe = thresholds.severe
    low = thresholds.maintenance / SCALE_BELOW_MAINTENANCE if thresholds.maintenance > 0 else severe / 16
    high = SCALE_ABOVE_SEVERE * severe
    values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    if len(positive):
        low = max(min(low, float(positive.min()) / SCALE_HEADROOM), SCALE_FLOOR_SEVERE * severe)
    if len(values):
        high = min(max(high, SCALE_HEADROOM * float(values.max())), SCALE_CAP_SEVERE * severe)
    return low, high


def scale_position(value: float, low: float, high: float) -> float:
    """Where ``value`` sits on the log scale from ``low`` to ``high``: 0 at ``low``, 1 at ``high``, clipped
    (zero, negative and NaN at 0)."""
    if not value > 0:  # zero, negative or NaN: the bottom of the scale
        return 0.0
    return min(max(math.log(value / low) / math.log(high / low), 0.0), 1.0)


def log_ticks(low: float, high: float, max_ticks: int) -> list[float]:
    """Round values between ``low`` and ``high`` for a log axis: 1-2-5 steps, or 1-3, or powers of ten."""
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [v for e in decades for m in mantissas if low <= (v := float(f"{m}e{e}")) <= high]
        if len(ticks) <= max_ticks:
            return ticks
    every = math.ceil(len(ticks) / max_ticks)
    return ticks[::every]


def linear_ticks(start: float, end: float, max_ticks: int) -> list[float]:
    """Round values from ``start`` to ``end`` (seconds, decibels), at most ``max_ticks`` of them."""
    span = max(end - start, 1e-9)
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600):
        if span / step + 1 <= max_ticks:
            break
    first = math.ceil(start / step - 1e-9)
    return [round(k * step, 6) for k in range(first, math.floor(end / step + 1e-9) + 1)]


# --- raster helpers ------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def pil_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int = FONT_PX) -> int:
    return math.ceil(pil_font(size).getlength(text))


@lru_cache(maxsize=32)
def _vertical_text(text: str, size: int) -> Image.Image:
    """A text mask turned a quarter to the left (reading upwards), for a y axis title."""
    font = pil_font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
    return mask.rotate(90, expand=True)


def draw_vertical_title(canvas: Image.Image, text: str, x: int, y_centre: int, colour: str = INK) -> None:
    mask = _vertical_text(text, FONT_PX)
    canvas.paste(_rgb(colour), (x, y_centre - mask.height // 2), mask)


def dashed_hline(
    draw: ImageDraw.ImageDraw,
    x0: int,
    x1: int,
    y: int,
    colour: str,
    *,
    width: int = 3,
    dash: int = 12,
    gap: int = 7,
) -> None:
    for start in range(x0, x1, dash + gap):
        draw.line([(start, y), (min(start + dash, x1), y)], fill=colour, width=width)


def time_axis(
    draw: ImageDraw.ImageDraw,
    left: int,
    right: int,
    bottom: int,
    t0: float,
    t1: float,
    title: str,
    height_px: int,
) -> None:
    """Ticks and labels under a plot whose x axis runs from ``t0`` (at ``left``) to ``t1`` (at ``right``)."""
    font = pil_font(FONT_PX)
    max_ticks = max(2, (right - left) // 95)
    for t in linear_ticks(t0, t1, max_ticks):
        x = round(left + (t - t0) / (t1 - t0) * (right - left))
        draw.line([(x, bottom), (x, bottom + 6)], fill=INK, width=2)
        draw.text((x, bottom + 9), f"{t:g}", font=font, fill=INK, anchor="mt")
    draw.text(((left + right) // 2, height_px - 6), title, font=font, fill=INK, anchor="md")


def svg_num(v: float) -> str:
    """A coordinate in an SVG picture: one decimal is finer than a screen pixel."""
    return f"{v:.1f}"


def svg_chart_open(css_class: str, width: float, height: float, max_px: int, label: str) -> str:
    """The opening ``<svg>`` of a score chart: a ``width`` x ``height`` viewBox drawn 100 % wide up to
    ``max_px``, text in the page's font and colour, and ``label`` (escaped) for screen readers."""
    return (
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{max_px}px;height:auto;display:block" font-family="system-ui, sans-serif" '
        f'role="img" aria-label="{html.escape(label)}">'
    )


def svg_score_axes(
    left: float, top: float, right: float, bottom: float, y_ticks, y_of, font_px: float
) -> list[str]:
    """SVG of a score chart's frame: a faint line and a label at each of ``y_ticks`` (``y_of`` places a
    score), and the left and bottom axes from (``left``, ``top``) to (``right``, ``bottom``)."""
    f = svg_num
    text = f'font-size="{font_px}" fill="currentColor"'
    parts = [
        f'<line x1="{f(left)}" x2="{f(right)}" y1="{f(y_of(value))}" y2="{f(y_of(value))}" stroke="currentColor" '
        f'stroke-opacity="0.15"/><text x="{f(left - 6)}" y="{f(y_of(value))}" {text} text-anchor="end" '
        f'dominant-baseline="middle">{value:g}</text>'
        for value in y_ticks
    ]
    parts.append(
        f'<path d="M{f(left)} {top}V{f(bottom)}H{f(right)}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
    )
    return parts
