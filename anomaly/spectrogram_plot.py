"""The spectrogram picture: the log-mel in the magma colour table, with the anomaly map laid over it where
the model heard something unusual, frequency and time axes and a decibel colour bar.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from anomaly.features import FeatureParams
from anomaly.plots import (
    FONT_PX,
    INK,
    MAGMA,
    PICTURE_WIDTH_PX,
    SMALL_FONT_PX,
    SPECTROGRAM_HEIGHT_PX,
    TOP_BAND_PX,
    draw_vertical_title,
    linear_ticks,
    pil_font,
    text_width,
    time_axis,
)

# Where the anomaly map starts to show and where it is fully opaque, in standard deviations of the
# reconstruction error above its level on normal clips. Fixed, so that pictures of two clips compare.
MAP_FLOOR_STD = 1.0
MAP_FULL_STD = 4.0
MAP_COLOUR = "#00e5ff"  # cyan: stands out on the magma colour map
MAP_OPACITY = 0.85  # at its strongest the map still lets the spectrogram show through


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
    width_px: int = PICTURE_WIDTH_PX,
    height_px: int = SPECTROGRAM_HEIGHT_PX,
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
    left = 8 + FONT_PX + 8 + max((text_width(n) for n in names), default=0) + 14
    right = 14 + bar_px + 8 + max(text_width(f"{v:g}", SMALL_FONT_PX) for v in db_ticks) + 6
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
    font, small = pil_font(FONT_PX), pil_font(SMALL_FONT_PX)
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
    draw_vertical_title(canvas, "frequency", 8, top + plot_h // 2)
    time_axis(draw, left, plot_right, plot_bottom, 0.0, duration_s, "time (s)", height_px)

    bar_left = plot_right + 14
    canvas.paste(_colour_bar(bar_px, plot_h), (bar_left, top))
    for value in db_ticks:
        y = round(plot_bottom - (value - params.db_min) / (params.db_max - params.db_min) * plot_h)
        draw.line([(bar_left + bar_px, y), (bar_left + bar_px + 4, y)], fill=INK, width=2)
        draw.text((bar_left + bar_px + 7, y), f"{value:g}", font=small, fill=INK, anchor="lm")
    # The unit goes under the tick values: above the bar it sat under the app's buttons on a phone.
    draw.text((bar_left + bar_px + 7, plot_bottom + 9), "dB", font=small, fill=INK, anchor="lt")
    return np.array(canvas)
