"""Pictures of an analysis: the spectrogram with its anomaly map, the score gauge and the window timeline.

Every function takes arrays (or an ``Analysis``'s fields) and returns an RGB ``uint8`` array of shape
``(height, width, 3)``, ready for ``gr.Image`` or ``PIL.Image.fromarray``. Figures are built with the
object-oriented matplotlib API on the Agg canvas (no ``pyplot``, no global state), so drawing is safe from
the app's worker threads.

Colours follow the three labels: green for NORMAL, amber for NEEDS MAINTENANCE, red for SEVERE ANOMALY
(``LABEL_COLOURS``).

Examples
--------
>>> from anomaly.scoring import Thresholds
>>> score_gauge(8.0, Thresholds(10.0, 12.0)).shape  # doctest: +SKIP
(300, 480, 3)
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Wedge

from anomaly.features import FeatureParams
from anomaly.scoring import LABELS, Thresholds

LABEL_COLOURS = {
    LABELS[0]: "#2e9d5b",  # green
    LABELS[1]: "#f0a30a",  # amber
    LABELS[2]: "#d64541",  # red
}
# Where the anomaly map starts to show and where it is fully opaque, in standard deviations of the
# reconstruction error above its level on normal clips. Fixed, so that pictures of two clips compare.
MAP_FLOOR_STD = 1.0
MAP_FULL_STD = 4.0
MAP_COLOUR = "#00e5ff"  # cyan: stands out on the magma colour map
INK = "#1f2933"
MUTED = "#6b7785"
DPI = 100


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure on the Agg canvas and return its pixels as ``(height, width, 3)`` uint8."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def gauge_range(thresholds: Thresholds) -> float:
    """Upper end of the gauge: half as far again as the severe threshold."""
    return 1.5 * thresholds.severe


def zone_colour(score: float, thresholds: Thresholds) -> str:
    """The colour of the label a score gets under ``thresholds``."""
    return LABEL_COLOURS[thresholds.label(score)]


def score_gauge(
    score: float, thresholds: Thresholds, *, width_px: int = 480, height_px: int = 300
) -> np.ndarray:
    """A dial whose three zones are the thresholds, with the needle at ``score``.

    The dial runs from 0 (left) to ``gauge_range(thresholds)`` (right); a score beyond the end pins the
    needle there and the number underneath says how far it went.
    """
    vmax = gauge_range(thresholds)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-0.62, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")

    def angle(value: float) -> float:
        return 180.0 - 180.0 * float(np.clip(value, 0.0, vmax)) / vmax

    zones = [
        (0.0, thresholds.maintenance, LABEL_COLOURS[LABELS[0]]),
        (thresholds.maintenance, thresholds.severe, LABEL_COLOURS[LABELS[1]]),
        (thresholds.severe, vmax, LABEL_COLOURS[LABELS[2]]),
    ]
    for lo, hi, colour in zones:
        ax.add_patch(
            Wedge((0, 0), 1.0, angle(hi), angle(lo), width=0.28, facecolor=colour, edgecolor="white", lw=2)
        )
    for value in (thresholds.maintenance, thresholds.severe):
        rad = np.deg2rad(angle(value))
        ax.plot(
            [0.7 * np.cos(rad), 1.04 * np.cos(rad)],
            [0.7 * np.sin(rad), 1.04 * np.sin(rad)],
            color=INK,
            lw=1.2,
        )
        ax.text(
            1.13 * np.cos(rad),
            1.13 * np.sin(rad),
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=10,
            color=INK,
        )
    ax.text(-0.86, -0.09, "0", ha="center", va="center", fontsize=9, color=MUTED)
    ax.text(0.86, -0.09, f"{vmax:.1f}", ha="center", va="center", fontsize=9, color=MUTED)

    rad = np.deg2rad(angle(score))
    ax.plot([0, 0.86 * np.cos(rad)], [0, 0.86 * np.sin(rad)], color=INK, lw=3.5, solid_capstyle="round")
    ax.add_patch(Circle((0, 0), 0.07, color=INK))
    colour = zone_colour(score, thresholds)
    beyond = "  (off the scale)" if score > vmax else ""
    ax.text(
        0, -0.25, f"{score:.2f}{beyond}", ha="center", va="center", fontsize=22, weight="bold", color=colour
    )
    ax.text(0, -0.49, "anomaly score", ha="center", va="center", fontsize=10, color=MUTED)
    return figure_to_rgb(fig)


def mel_band_centres(params: FeatureParams) -> np.ndarray:
    """Centre frequency in Hz of each mel band (row 0 the lowest)."""
    import librosa

    fmax = params.fmax if params.fmax is not None else params.sr / 2
    return librosa.mel_frequencies(n_mels=params.n_mels + 2, fmin=params.fmin, fmax=fmax)[1:-1]


def _frequency_ticks(params: FeatureParams) -> tuple[list[float], list[str]]:
    centres = mel_band_centres(params)
    rows, names = [], []
    for hz in (100, 250, 500, 1000, 2000, 4000, 8000, 16000):
        if centres[0] <= hz <= centres[-1]:
            rows.append(float(np.interp(hz, centres, np.arange(len(centres)))))
            names.append(f"{hz // 1000} kHz" if hz >= 1000 else f"{hz} Hz")
    return rows, names


def anomaly_alpha(anomaly_map: np.ndarray) -> np.ndarray:
    """Opacity of the overlay per cell: 0 up to ``MAP_FLOOR_STD``, 1 from ``MAP_FULL_STD``, linear between."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(np.asarray(anomaly_map, dtype=np.float32), sigma=1.0)
    return np.clip((smooth - MAP_FLOOR_STD) / (MAP_FULL_STD - MAP_FLOOR_STD), 0.0, 1.0)


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
    """
    log_mel = np.asarray(log_mel, dtype=np.float32)
    n_mels, n_frames = log_mel.shape
    duration_s = n_frames * params.frame_seconds
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    # Leave a band at the top free: the app's image label sits over the picture's top-left corner.
    top = 0.7 if title else 0.74
    ax = fig.add_axes((0.085, 0.14, 0.8, top))
    extent = (0.0, duration_s, -0.5, n_mels - 0.5)
    image = ax.imshow(
        log_mel,
        origin="lower",
        aspect="auto",
        extent=extent,
        cmap="magma",
        vmin=params.db_min,
        vmax=params.db_max,
        interpolation="nearest",
    )
    if anomaly_map is not None:
        if anomaly_map.shape != log_mel.shape:
            raise ValueError(
                f"anomaly map {anomaly_map.shape} does not match the spectrogram {log_mel.shape}"
            )
        overlay = np.zeros((n_mels, n_frames, 4), dtype=np.float32)
        overlay[..., :3] = to_rgb(MAP_COLOUR)
        overlay[..., 3] = 0.85 * anomaly_alpha(anomaly_map)
        ax.imshow(overlay, origin="lower", aspect="auto", extent=extent, interpolation="bilinear")
    rows, names = _frequency_ticks(params)
    ax.set_yticks(rows, names)
    ax.set_xlabel("time (s)", color=INK)
    ax.tick_params(colors=INK, labelsize=9)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=11, color=INK)
    cax = fig.add_axes((0.9, 0.14, 0.015, top))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("dB", color=INK)
    bar.ax.tick_params(labelsize=8, colors=INK)
    bar.outline.set_visible(False)
    return figure_to_rgb(fig)


def window_timeline(
    window_times_s: np.ndarray,
    window_scores: np.ndarray,
    thresholds: Thresholds,
    window_seconds: float,
    *,
    width_px: int = 900,
    height_px: int = 220,
    time_range_s: tuple[float, float] | None = None,
    xlabel: str = "time (s)",
) -> np.ndarray:
    """Score of every analysis window over time, coloured by the label it would get on its own.

    Each bar spans its window (windows overlap, so bars do too, drawn narrower than the window for
    legibility); dashed lines mark the two thresholds. The clip's score is the highest bar.
    ``time_range_s`` fixes the x axis (a rolling view of the last minute); by default it runs from 0 to
    the end of the last window.
    """
    times = np.asarray(window_times_s, dtype=np.float64)
    scores = np.asarray(window_scores, dtype=np.float64)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    ax = fig.add_axes((0.085, 0.24, 0.8, 0.66))
    centres = times + window_seconds / 2
    hop = float(np.min(np.diff(times))) if len(times) > 1 else window_seconds
    colours = [zone_colour(s, thresholds) for s in scores]
    # One collection of rectangles rather than ax.bar's one patch per bar: the live timeline redraws a
    # minute of bars every second, and 60 patches cost 40 ms.
    half = 0.4 * min(hop, window_seconds)
    bars = [
        [(c - half, 0.0), (c - half, s), (c + half, s), (c + half, 0.0)]
        for c, s in zip(centres, scores, strict=True)
    ]
    ax.add_collection(PolyCollection(bars, facecolors=colours, edgecolors="none"), autolim=False)
    top = max(float(scores.max()) if len(scores) else 0.0, thresholds.severe) * 1.25
    # Maintenance label just below its line, severe just above, so that close thresholds stay legible.
    for value, label, va in (
        (thresholds.maintenance, LABELS[1], "top"),
        (thresholds.severe, LABELS[2], "bottom"),
    ):
        ax.axhline(value, color=LABEL_COLOURS[label], lw=1.2, ls="--")
        ax.text(
            1.005,
            value,
            f"{value:.2f}",
            transform=ax.get_yaxis_transform(),
            va=va,
            fontsize=8,
            color=LABEL_COLOURS[label],
        )
    ax.set_ylim(0, top)
    end = float(times[-1] + window_seconds) if len(times) else window_seconds
    ax.set_xlim(*(time_range_s or (0, end)))
    ax.set_xlabel(xlabel, color=INK)
    ax.set_ylabel("window score", color=INK)
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(axis="y", color="#e4e7eb", lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return figure_to_rgb(fig)


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
        width_px=760,
        height_px=240,
    )
