"""Pictures of an analysis: the spectrogram with its anomaly map, the window timeline, the score gauge and the
batch's trend.

The spectrogram and the timelines are RGB ``uint8`` arrays of shape ``(height, width, 3)``, ready for
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
>>> gauge_html(8.0, Thresholds(10.0, 12.0)).startswith('<div class="gauge"')
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from anomaly.features import FeatureParams
from anomaly.scoring import LABELS, Thresholds

LABEL_COLOURS = {
    LABELS[0]: "#2e9d5b",  # green
    LABELS[1]: "#f0a30a",  # amber
    LABELS[2]: "#d64541",  # red
}
ZONE_NAMES = {LABELS[0]: "Normal", LABELS[1]: "Needs maintenance", LABELS[2]: "Severe"}
# Where the anomaly map starts to show and where it is fully opaque, in standard deviations of the
# reconstruction error above its level on normal clips. Fixed, so that pictures of two clips compare.
MAP_FLOOR_STD = 1.0
MAP_FULL_STD = 4.0
MAP_COLOUR = "#00e5ff"  # cyan: stands out on the magma colour map
MAP_OPACITY = 0.85  # at its strongest the map still lets the spectrogram show through
INK = "#1f2933"
MUTED = "#6b7785"
GRID = "#e4e7eb"

# Text in the raster pictures. They are about 900 px wide and shown 360 to 400 px wide on a phone, where
# 24 px become 10 to 11 px: about the smallest that stays legible.
FONT_PX = 24
SMALL_FONT_PX = 21
TOP_BAND_PX = 40  # the app's image label sits over the picture's top-left corner: keep it free
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
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _text_width(text: str, size: int = FONT_PX) -> int:
    return math.ceil(_font(size).getlength(text))


@lru_cache(maxsize=32)
def _vertical_text(text: str, size: int) -> Image.Image:
    """A text mask turned a quarter to the left (reading upwards), for a y axis title."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
    return mask.rotate(90, expand=True)


def _draw_vertical_title(canvas: Image.Image, text: str, x: int, y_centre: int, colour: str = INK) -> None:
    mask = _vertical_text(text, FONT_PX)
    canvas.paste(_rgb(colour), (x, y_centre - mask.height // 2), mask)


def _dashed_hline(
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


def _time_axis(
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
    font = _font(FONT_PX)
    max_ticks = max(2, (right - left) // 95)
    for t in linear_ticks(t0, t1, max_ticks):
        x = round(left + (t - t0) / (t1 - t0) * (right - left))
        draw.line([(x, bottom), (x, bottom + 6)], fill=INK, width=2)
        draw.text((x, bottom + 9), f"{t:g}", font=font, fill=INK, anchor="mt")
    draw.text(((left + right) // 2, height_px - 6), title, font=font, fill=INK, anchor="md")


# --- spectrogram ---------------------------------------------------------------------------------------


def mel_band_centres(params: FeatureParams) -> np.ndarray:
    """Centre frequency in Hz of each mel band (row 0 the lowest)."""
    import librosa

    fmax = params.fmax if params.fmax is not None else params.sr / 2
    return librosa.mel_frequencies(n_mels=params.n_mels + 2, fmin=params.fmin, fmax=fmax)[1:-1]


@lru_cache(maxsize=8)
def _frequency_ticks(params: FeatureParams) -> tuple[tuple[float, ...], tuple[str, ...]]:
    centres = mel_band_centres(params)
    rows, names = [], []
    for hz in (100, 250, 500, 1000, 2000, 4000, 8000, 16000):
        if centres[0] <= hz <= centres[-1]:
            rows.append(float(np.interp(hz, centres, np.arange(len(centres)))))
            names.append(f"{hz // 1000} kHz" if hz >= 1000 else f"{hz} Hz")
    return tuple(rows), tuple(names)


def anomaly_alpha(anomaly_map: np.ndarray) -> np.ndarray:
    """Opacity of the overlay per cell: 0 up to ``MAP_FLOOR_STD``, 1 from ``MAP_FULL_STD``, linear between."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(np.asarray(anomaly_map, dtype=np.float32), sigma=1.0)
    return np.clip((smooth - MAP_FLOOR_STD) / (MAP_FULL_STD - MAP_FLOOR_STD), 0.0, 1.0)


@lru_cache(maxsize=8)
def _colour_bar(width: int, height: int) -> Image.Image:
    column = np.ascontiguousarray(MAGMA[::-1, None, :].repeat(width, axis=1))
    return Image.fromarray(column).resize((width, height), Image.Resampling.BILINEAR)


def spectrogram_picture(
    log_mel: np.ndarray,
    params: FeatureParams,
    anomaly_map: np.ndarray | None = None,
    *,
    title: str | None = None,
    width_px: int = 900,
    height_px: int = 360,
) -> np.ndarray:
    """The log-mel spectrogram (time to the right, low frequencies at the bottom), optionally with the
    anomaly map laid over it in cyan where the recording departs from normal.

    Parameters
    ----------
    log_mel : ``(n_mels, frames)`` in dB, as ``Analysis.log_mel``.
    params : the bundle's preprocessing (frame rate, mel range, dB range of the colour scale).
    anomaly_map : ``(n_mels, frames)`` standard deviations above normal, as ``Analysis.anomaly_map``.
    title : text above the picture (the file name, say).

    Returns
    -------
    ``(height_px, width_px, 3)`` uint8 RGB.
    """
    log_mel = np.asarray(log_mel, dtype=np.float32)
    if log_mel.ndim != 2 or log_mel.shape[1] == 0:
        raise ValueError(f"expected a (n_mels, frames) spectrogram, got shape {log_mel.shape}")
    if anomaly_map is not None and np.shape(anomaly_map) != log_mel.shape:
        raise ValueError(
            f"anomaly map {np.shape(anomaly_map)} does not match the spectrogram {log_mel.shape}"
        )
    n_mels, n_frames = log_mel.shape
    duration_s = n_frames * params.frame_seconds
    rows, names = _frequency_ticks(params)
    db_ticks = linear_ticks(params.db_min, params.db_max, 5)
    bar_px = 14
    left = 8 + FONT_PX + 8 + max((_text_width(n) for n in names), default=0) + 14
    right = 14 + bar_px + 8 + max(_text_width(f"{v:g}", SMALL_FONT_PX) for v in db_ticks) + 6
    top = TOP_BAND_PX + (FONT_PX + 14 if title else 0)
    bottom = 2 * FONT_PX + 24
    plot_w, plot_h = width_px - left - right, height_px - top - bottom
    if plot_w < 40 or plot_h < 40:
        raise ValueError(f"a {width_px} x {height_px} picture leaves no room for the spectrogram")

    # Colour-map after resizing the dB indices (averaging neighbouring frames of a long recording, as a
    # screen cannot show 3750 frames in 700 pixels), so that the averaging happens in dB, not in colour.
    # The colour map is the palette of a "P" image and the overlay a composite: both run in Pillow's C.
    scaled = (log_mel[::-1] - params.db_min) * (255.0 / (params.db_max - params.db_min))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    index = Image.fromarray(np.rint(scaled).astype(np.uint8), "L").resize(
        (plot_w, plot_h), Image.Resampling.BOX
    )
    spectrogram = Image.frombytes("P", index.size, index.tobytes())
    spectrogram.putpalette(MAGMA.tobytes())
    spectrogram = spectrogram.convert("RGB")
    if anomaly_map is not None:
        alpha = np.rint(255 * MAP_OPACITY * anomaly_alpha(anomaly_map)[::-1]).astype(np.uint8)
        if alpha.any():
            mask = Image.fromarray(alpha, "L").resize((plot_w, plot_h), Image.Resampling.BILINEAR)
            spectrogram = Image.composite(Image.new("RGB", mask.size, MAP_COLOUR), spectrogram, mask)

    canvas = Image.new("RGB", (width_px, height_px), "white")
    canvas.paste(spectrogram, (left, top))
    draw = ImageDraw.Draw(canvas)
    font, small = _font(FONT_PX), _font(SMALL_FONT_PX)
    plot_bottom, plot_right = top + plot_h, left + plot_w
    if title:
        draw.text((left, top - 10), title, font=font, fill=INK, anchor="ld")

    # Frequency ticks from the top down, leaving out any that would touch the one above.
    last_y = -FONT_PX
    for row, name in sorted(zip(rows, names, strict=True), reverse=True):
        y = round(plot_bottom - (row + 0.5) / n_mels * plot_h)
        if y - last_y < FONT_PX + 4 or y > plot_bottom - FONT_PX // 2 + 4:
            continue
        last_y = y
        draw.line([(left - 7, y), (left - 1, y)], fill=INK, width=2)
        draw.text((left - 11, y), name, font=font, fill=INK, anchor="rm")
    _draw_vertical_title(canvas, "frequency", 8, top + plot_h // 2)
    _time_axis(draw, left, plot_right, plot_bottom, 0.0, duration_s, "time (s)", height_px)

    bar_left = plot_right + 14
    canvas.paste(_colour_bar(bar_px, plot_h), (bar_left, top))
    for value in db_ticks:
        y = round(plot_bottom - (value - params.db_min) / (params.db_max - params.db_min) * plot_h)
        draw.line([(bar_left + bar_px, y), (bar_left + bar_px + 4, y)], fill=INK, width=2)
        draw.text((bar_left + bar_px + 7, y), f"{value:g}", font=small, fill=INK, anchor="lm")
    draw.text((bar_left + bar_px // 2, top - 8), "dB", font=small, fill=INK, anchor="md")
    return np.array(canvas)


# --- timelines -----------------------------------------------------------------------------------------


def window_timeline(
    window_times_s: np.ndarray,
    window_scores: np.ndarray,
    thresholds: Thresholds,
    window_seconds: float,
    *,
    width_px: int = 900,
    height_px: int = 300,
    time_range_s: tuple[float, float] | None = None,
    xlabel: str = "time (s)",
    familiar: bool = True,
) -> np.ndarray:
    """Score of every analysis window over time, coloured by the label it would get on its own (grey, like
    the verdict, when the recording is ``familiar=False``: its scores measure an unknown machine).

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
    end = float(times.max() + window_seconds) if len(times) else window_seconds
    t0, t1 = time_range_s or (0.0, end)
    if not t1 > t0:
        t1 = t0 + window_seconds
    # The scale fits the windows in view: a spike that has scrolled out of the live minute lets go of it.
    low, high = score_scale(thresholds, scores[(times + window_seconds > t0) & (times < t1)])

    font = _font(FONT_PX)
    legend_top = 8
    top = legend_top + FONT_PX + 8 + 16  # the legend, then room for an off-the-scale triangle
    bottom = 2 * FONT_PX + 24
    max_y_ticks = max(2, (height_px - top - bottom) // (FONT_PX + 8))
    y_ticks = log_ticks(low, high, max_y_ticks)
    left = 8 + FONT_PX + 8 + max((_text_width(f"{v:g}") for v in y_ticks), default=0) + 14
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
    for start, score in zip(times, scores, strict=True):
        if not np.isfinite(score):
            continue
        centre = x_of(start + window_seconds / 2)
        x0, x1 = max(round(centre - half_px), left), min(round(centre + half_px) - 1, plot_right)
        if x1 < x0:
            continue  # outside the time range
        colour = zone_colour(score, thresholds) if familiar else MUTED
        # A score at or below the bottom of the scale still gets a stub, so that every window shows.
        draw.rectangle([x0, min(y_of(score), plot_bottom - 3), x1, plot_bottom], fill=colour)
        if score > high:
            overflow.append((x0, x1, score, colour))

    for value, label in ((thresholds.maintenance, LABELS[1]), (thresholds.severe, LABELS[2])):
        _dashed_hline(draw, left, plot_right, y_of(value), LABEL_COLOURS[label])
    draw.line([(left, top), (left, plot_bottom)], fill=INK, width=2)
    draw.line([(left, plot_bottom), (plot_right, plot_bottom)], fill=INK, width=2)

    # An off-the-scale bar gets a triangle above it and its value beside it (inside it when no side has room).
    for x0, x1, score, colour in overflow:
        x = (x0 + x1) // 2
        draw.polygon([(x - 8, top - 2), (x + 8, top - 2), (x, top - 15)], fill=colour)
        text = format_score(score)
        width = _text_width(text)
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
        (f"{name} {format_score(value)}", LABEL_COLOURS[label])
        for name, value, label in (
            ("maintenance", thresholds.maintenance, LABELS[1]),
            ("severe", thresholds.severe, LABELS[2]),
        )
    ]
    swatch, gap = 34, 8
    x = left
    y = legend_top + FONT_PX // 2 + 2
    for text, colour in items:
        _dashed_hline(draw, x, x + swatch, y, colour, dash=10, gap=4)
        x += swatch + gap
        draw.text((x, y), text, font=font, fill=INK, anchor="lm")
        x += _text_width(text) + 24

    _draw_vertical_title(canvas, "score", 8, top + plot_h // 2)
    _time_axis(draw, left, plot_right, plot_bottom, t0, t1, xlabel, height_px)
    return np.array(canvas)


def live_timeline(
    window_starts_s: np.ndarray,
    window_scores: np.ndarray,
    thresholds: Thresholds,
    window_seconds: float,
    *,
    now_s: float,
    span_s: float = 60.0,
) -> np.ndarray:
    """The rolling timeline of a live session: the last ``span_s`` seconds of window scores, thresholds drawn.

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
    )


# --- the score gauge (HTML) ----------------------------------------------------------------------------

GAUGE_BAR_PX = 18
UNFAMILIAR_HINT = "The machine does not sound like the reference: the score is not comparable"
GAUGE_MARKER_PX = 14
# Scoped under .gauge: the fragment sits in a page it must not restyle. Text colours inherit, so that the
# gauge reads on the app's light and dark themes alike.
GAUGE_STYLE = f"""<style>
.gauge {{ box-sizing: border-box; width: 100%; padding: 2px 12px 4px; line-height: 1.3;
  font-size: max(1em, 15px); }}
.gauge .gauge-score-row {{ white-space: nowrap; min-height: 2.6em; }}
.gauge .gauge-score {{ display: inline-block; position: relative; font-size: 2em; font-weight: 700;
  font-variant-numeric: tabular-nums; white-space: normal; }}
.gauge .gauge-overflow {{ display: inline-block; font-size: 0.5em; font-weight: 600; margin-left: 0.4em;
  white-space: nowrap; }}
.gauge .gauge-track {{ position: relative; padding-top: {GAUGE_MARKER_PX}px; }}
.gauge .gauge-bar {{ position: relative; height: {GAUGE_BAR_PX}px; border-radius: {GAUGE_BAR_PX // 2}px;
  overflow: hidden; }}
.gauge .gauge-zone {{ position: absolute; top: 0; bottom: 0; }}
.gauge .gauge-tick {{ position: absolute; top: {GAUGE_MARKER_PX - 3}px; width: 2px;
  height: {GAUGE_BAR_PX + 8}px; margin-left: -1px; background: currentColor; opacity: 0.8; }}
.gauge .gauge-marker {{ position: absolute; top: 0; width: 0; height: 0; margin-left: -9px;
  border-left: 9px solid transparent; border-right: 9px solid transparent;
  border-top: {GAUGE_MARKER_PX}px solid currentColor; }}
.gauge .gauge-marker::after {{ content: ""; position: absolute; left: -2px; top: 0; width: 4px;
  height: {GAUGE_BAR_PX}px; background: {INK}; box-shadow: 0 0 0 1px #fff; }}
.gauge .gauge-thresholds {{ position: relative; height: 1.5em; margin-top: 6px; font-size: 0.95em;
  white-space: nowrap; font-variant-numeric: tabular-nums; }}
.gauge .gauge-threshold-label {{ position: absolute; top: 0; }}
.gauge .gauge-legend {{ display: flex; flex-wrap: wrap; gap: 2px 16px; margin-top: 4px; font-size: 0.95em; }}
.gauge .gauge-zone-name {{ display: inline-flex; align-items: center; gap: 6px; white-space: nowrap; }}
.gauge .gauge-swatch {{ display: inline-block; width: 14px; height: 14px; border-radius: 3px; }}
</style>"""


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3f}%"


def gauge_html(score: float | None, thresholds: Thresholds, *, familiar: bool = True) -> str:
    """The score gauge as an HTML fragment (no image, no script) for ``gr.HTML``.

    A horizontal bar in three zones (Normal, Needs maintenance, Severe) on the log scale of
    ``score_scale``; the two thresholds' values under their ticks, the maintenance one ending at its tick
    and the severe one starting at its tick, so that they never meet however close the thresholds are; the
    score as a big number on its own line above a triangle marker, both in the colour of its zone; the
    zone names in a legend under the bar. Every position is a percentage, so the gauge fits any width, and
    each kind of text has its own row, so no two labels overlap at any width.

    Parameters
    ----------
    score : the anomaly score; None (or not finite) draws the bar without a marker.
    thresholds : where the zones start.
    familiar : False when the machine does not sound like the reference (the verdict is "unfamiliar"):
        the marker and the number are then grey (``MUTED``), not the colour of a zone.

    Classes: ``gauge``, ``gauge-bar``, ``gauge-zone``, ``gauge-threshold-label``, ``gauge-marker``,
    ``gauge-score``, ``gauge-overflow``, ``gauge-zone-name``.
    """
    has_score = score is not None and math.isfinite(score)
    low, high = score_scale(thresholds, [score] if has_score else [])
    bounds = [low, thresholds.maintenance, thresholds.severe, high]
    positions = [scale_position(v, low, high) for v in bounds]
    positions[0], positions[-1] = 0.0, 1.0

    zones = "".join(
        f'<div class="gauge-zone" data-zone="{html.escape(label)}" title="{html.escape(ZONE_NAMES[label])}" '
        f'style="left:{_pct(a)};width:{_pct(b - a)};background:{LABEL_COLOURS[label]}"></div>'
        for label, a, b in zip(LABELS, positions[:-1], positions[1:], strict=True)
    )
    m, s = positions[1], positions[2]
    ticks = "".join(f'<div class="gauge-tick" style="left:{_pct(p)}"></div>' for p in (m, s))
    # The maintenance value ends at its tick, the severe value starts at its tick. A maintenance threshold
    # near the left end (zero, or far below severe) has no room before its tick and starts at it instead,
    # and a severe threshold near the right end ends at its tick: that happens only when severe is hundreds
    # of times maintenance, and the scale then puts the two ticks most of the bar apart.
    m_place = f"right:{_pct(1 - m)};padding-right:5px" if m > 0.15 else f"left:{_pct(m)};padding-left:5px"
    s_place = f"left:{_pct(s)};padding-left:5px" if s < 0.85 else f"right:{_pct(1 - s)};padding-right:5px"
    threshold_labels = (
        f'<span class="gauge-threshold-label" data-threshold="maintenance" style="{m_place}" '
        f'title="Needs maintenance from {format_score(thresholds.maintenance)}">'
        f"{format_score(thresholds.maintenance)}</span>"
        f'<span class="gauge-threshold-label" data-threshold="severe" style="{s_place}" '
        f'title="Severe from {format_score(thresholds.severe)}">{format_score(thresholds.severe)}</span>'
    )
    legend = "".join(
        f'<span class="gauge-zone-name" data-zone="{html.escape(label)}">'
        f'<span class="gauge-swatch" style="background:{LABEL_COLOURS[label]}"></span>'
        f"{html.escape(ZONE_NAMES[label])}</span>"
        for label in LABELS
    )

    marker = score_row = ""
    summary = "Anomaly score: none yet"
    if has_score:
        label = thresholds.label(score)
        colour = LABEL_COLOURS[label] if familiar else MUTED
        p = scale_position(score, low, high)
        off_scale = score > high
        marker = f'<div class="gauge-marker" style="left:{_pct(p)};color:{colour}"></div>'
        overflow = '<span class="gauge-overflow">off the scale &#9654;</span>' if off_scale else ""
        hint = "" if familiar else f' title="{UNFAMILIAR_HINT}"'
        # Shifted left by its own width times p: at the left end it starts at the edge, at the right end it
        # ends there, and in between the point over the marker moves smoothly.
        score_row = (
            f'<span class="gauge-score" style="left:{_pct(p)};transform:translateX(-{_pct(p)});'
            f'color:{colour}"{hint}>{format_score(score)}{overflow}</span>'
        )
        zone = ZONE_NAMES[label] if familiar else "unfamiliar machine"
        summary = f"Anomaly score {format_score(score)} ({zone}{', off the scale' if off_scale else ''})"
    summary += (
        f"; needs maintenance from {format_score(thresholds.maintenance)}, "
        f"severe from {format_score(thresholds.severe)}"
    )
    return (
        f'<div class="gauge" role="img" aria-label="{html.escape(summary)}">{GAUGE_STYLE}'
        f'<div class="gauge-score-row">{score_row or "&nbsp;"}</div>'
        f'<div class="gauge-track"><div class="gauge-bar">{zones}</div>{ticks}{marker}</div>'
        f'<div class="gauge-thresholds">{threshold_labels}</div>'
        f'<div class="gauge-legend">{legend}</div>'
        "</div>"
    )


# --- the batch trend (SVG) -----------------------------------------------------------------------------

# In viewBox units. Shown 330 to 390 px wide on a phone the text is 12 to 14 px; on a desktop the SVG stops
# growing at TREND_MAX_PX, where it is 26 px.
TREND_WIDTH, TREND_HEIGHT = 520, 270
TREND_FONT = 19
TREND_MAX_PX = 720


def batch_trend_svg(names: list[str], scores: list[float | None], thresholds: Thresholds) -> str:
    """The batch's scores in upload order as an inline SVG (``viewBox``, 100 % wide) for ``gr.HTML``.

    x is the file's place in the batch (1..N), y its score on the log scale of ``score_scale``; the two
    thresholds are dashed lines, named with their values in a legend above the plot; points take the colour
    of their zone, and a score beyond the cap is a triangle at the top. Files that failed (score None) are
    grey crosses on the x axis. Every point's ``<title>`` says "file name: score (LABEL)" (or "file name:
    failed"), which browsers show when the pointer is anywhere in the file's column.

    Classes: ``trend`` (the ``<svg>``), ``trend-point`` (one ``<g>`` per file, with ``trend-failed`` for
    a failure), ``trend-threshold``.
    """
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names for {len(scores)} scores")
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

    def f(v: float) -> str:
        return f"{v:.1f}"

    text = f'font-size="{F}" fill="currentColor"'
    parts = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" '
        f'style="max-width:{TREND_MAX_PX}px;height:auto;display:block" font-family="system-ui, sans-serif" '
        f'role="img" aria-label="Scores of {n} file{"s" if n != 1 else ""} in upload order">'
    ]
    for value in y_ticks:
        y = f(y_of(value))
        parts.append(
            f'<line x1="{f(left)}" x2="{f(plot_right)}" y1="{y}" y2="{y}" stroke="currentColor" '
            f'stroke-opacity="0.15"/><text x="{f(left - 6)}" y="{y}" {text} text-anchor="end" '
            f'dominant-baseline="middle">{value:g}</text>'
        )
    parts.append(
        f'<path d="M{f(left)} {top}V{f(plot_bottom)}H{f(plot_right)}" fill="none" stroke="currentColor" '
        f'stroke-width="1.5"/>'
    )
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
    for i, (name, v) in enumerate(zip(names, values, strict=True), start=1):
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
