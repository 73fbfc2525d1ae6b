"""The drawing functions: RGB arrays whose colours follow the thresholds and whose overlay sits where the map is."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from anomaly.features import FeatureParams
from anomaly.plots import (
    LABEL_COLOURS,
    MAP_COLOUR,
    MAP_FULL_STD,
    anomaly_alpha,
    gauge_range,
    score_gauge,
    spectrogram_picture,
    window_timeline,
    zone_colour,
)
from anomaly.scoring import LABELS, Thresholds

PARAMS = FeatureParams()
GREEN, AMBER, RED = (LABEL_COLOURS[label] for label in LABELS)


def pixels_like(image: np.ndarray, colour: str, tolerance: float = 30.0) -> np.ndarray:
    """Mask of pixels within ``tolerance`` (RGB distance, 0..255 scale) of ``colour``."""
    target = np.asarray(to_rgb(colour)) * 255
    return np.linalg.norm(image.astype(np.float64) - target, axis=-1) < tolerance


def log_mel(n_frames: int = 313, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-60 + 10 * rng.standard_normal((PARAMS.n_mels, n_frames))).astype(np.float32)


def hot_block(rows: slice, frames: slice, n_frames: int = 313) -> np.ndarray:
    anomaly_map = np.zeros((PARAMS.n_mels, n_frames), np.float32)
    anomaly_map[rows, frames] = 3 * MAP_FULL_STD
    return anomaly_map


def test_gauge_is_an_rgb_image():
    image = score_gauge(5.0, Thresholds(10.0, 12.0), width_px=480, height_px=300)
    assert image.shape == (300, 480, 3) and image.dtype == np.uint8


def test_gauge_zones_follow_the_thresholds():
    # Same dial range (severe fixed), maintenance moved: the green and amber arcs trade length accordingly.
    score = 17.5  # in the red zone, so that the number under the dial is red in both pictures
    narrow = score_gauge(score, Thresholds(10.0, 12.0))
    wide = score_gauge(score, Thresholds(5.0, 12.0))
    vmax = gauge_range(Thresholds(5.0, 12.0))
    green_ratio = pixels_like(narrow, GREEN).sum() / pixels_like(wide, GREEN).sum()
    amber_ratio = pixels_like(narrow, AMBER).sum() / pixels_like(wide, AMBER).sum()
    assert green_ratio == pytest.approx(10.0 / 5.0, rel=0.15)
    assert amber_ratio == pytest.approx(2.0 / 7.0, rel=0.2)
    red_share = pixels_like(wide, RED).sum() / sum(pixels_like(wide, c).sum() for c in (GREEN, AMBER, RED))
    assert red_share == pytest.approx((vmax - 12.0) / vmax, abs=0.08)


def test_gauge_needle_moves_with_the_score_and_stays_on_the_dial():
    thresholds = Thresholds(10.0, 12.0)
    low, high = score_gauge(1.0, thresholds), score_gauge(11.0, thresholds)
    assert np.any(low != high)
    # The number under the dial takes the colour of the score's zone.
    assert (
        pixels_like(score_gauge(1.0, thresholds), GREEN).sum()
        > pixels_like(score_gauge(11.0, thresholds), GREEN).sum()
    )
    off_scale = score_gauge(10 * gauge_range(thresholds), thresholds)
    assert off_scale.shape == low.shape


def test_zone_colour_is_the_label_colour():
    thresholds = Thresholds(10.0, 12.0)
    assert [zone_colour(s, thresholds) for s in (9.99, 10.0, 11.9, 12.0)] == [GREEN, AMBER, AMBER, RED]


def test_spectrogram_picture_shape_and_no_map_without_anomaly():
    spec = log_mel()
    plain = spectrogram_picture(spec, PARAMS, width_px=900, height_px=360)
    assert plain.shape == (360, 900, 3) and plain.dtype == np.uint8
    quiet = spectrogram_picture(spec, PARAMS, np.zeros_like(spec))
    np.testing.assert_array_equal(quiet, plain)


def test_overlay_changes_pixels_where_the_map_is_high():
    spec = log_mel()
    plain = spectrogram_picture(spec, PARAMS)

    def changed(anomaly_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picture = spectrogram_picture(spec, PARAMS, anomaly_map)
        mask = np.any(picture != plain, axis=-1)
        return picture, mask

    early_low, mask_a = changed(hot_block(slice(10, 30), slice(20, 60)))
    late_high, mask_b = changed(hot_block(slice(90, 110), slice(220, 260)))
    assert 0 < mask_a.mean() < 0.1 and 0 < mask_b.mean() < 0.1
    ys_a, xs_a = np.nonzero(mask_a)
    ys_b, xs_b = np.nonzero(mask_b)
    assert xs_b.mean() > xs_a.mean() + 200  # later in time: further right
    assert ys_b.mean() < ys_a.mean() - 100  # higher bands: nearer the top
    # Inside the block the overlay colour dominates.
    assert pixels_like(early_low[mask_a], MAP_COLOUR, tolerance=60).mean() > 0.5


def test_anomaly_alpha_floor_and_saturation():
    alpha = anomaly_alpha(hot_block(slice(40, 80), slice(100, 200)))
    assert alpha.min() == 0.0 and alpha.max() == 1.0
    assert alpha[60, 150] == 1.0 and alpha[0, 0] == 0.0


def test_map_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        spectrogram_picture(log_mel(), PARAMS, np.zeros((PARAMS.n_mels, 10), np.float32))


def test_timeline_bars_take_their_zone_colour():
    thresholds = Thresholds(10.0, 12.0)
    times = np.arange(9) * 1.024
    calm = window_timeline(times, np.full(9, 5.0), thresholds, PARAMS.window_seconds)
    spiky = window_timeline(
        times, np.array([5.0] * 4 + [20.0] + [5.0] * 4), thresholds, PARAMS.window_seconds
    )
    assert calm.shape == (220, 900, 3) and calm.dtype == np.uint8
    assert pixels_like(spiky, RED).sum() > pixels_like(calm, RED).sum() + 500
    assert pixels_like(spiky, GREEN).sum() < pixels_like(calm, GREEN).sum()


def test_timeline_of_a_single_window():
    image = window_timeline(np.zeros(1), np.array([3.0]), Thresholds(10.0, 12.0), PARAMS.window_seconds)
    assert image.ndim == 3 and pixels_like(image, GREEN).sum() > 100
