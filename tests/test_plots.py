"""The drawing functions: pictures whose colours follow the thresholds and whose overlay sits where the map
is, a gauge and a trend whose structure the browser can lay out at any width."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from anomaly.charts import batch_trend_svg, live_timeline, window_timeline
from anomaly.features import FeatureParams
from anomaly.gauge import gauge_html
from anomaly.plots import (
    BUTTONS_PX,
    FONT_PX,
    LABEL_COLOURS,
    MAGMA,
    MUTED,
    NEUTRAL_ZONE_COLOURS,
    PICTURE_WIDTH_PX,
    SCALE_CAP_SEVERE,
    SPECTROGRAM_HEIGHT_PX,
    TIMELINE_HEIGHT_PX,
    ZONE_NAMES,
    log_ticks,
    scale_position,
    score_scale,
    zone_colour,
)
from anomaly.scoring import LABELS, UNFAMILIAR, Thresholds
from anomaly.spectrogram_plot import MAP_COLOUR, MAP_FULL_STD, anomaly_alpha, spectrogram_picture

PARAMS = FeatureParams()
GREEN, AMBER, RED = (LABEL_COLOURS[label] for label in LABELS)
BUNDLED = Thresholds(1.2736, 1.5033)  # the shipped model's: close together, as real thresholds often are


def pixels_like(image: np.ndarray, colour: str | np.ndarray, tolerance: float = 30.0) -> np.ndarray:
    """Mask of pixels within ``tolerance`` (RGB distance, 0..255 scale) of ``colour``."""
    target = np.asarray(to_rgb(colour)) * 255 if isinstance(colour, str) else np.asarray(colour, np.float64)
    return np.linalg.norm(image.astype(np.float64) - target, axis=-1) < tolerance


def log_mel(n_frames: int = 313, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (-60 + 10 * rng.standard_normal((PARAMS.n_mels, n_frames))).astype(np.float32)


def hot_block(rows: slice, frames: slice, n_frames: int = 313) -> np.ndarray:
    anomaly_map = np.zeros((PARAMS.n_mels, n_frames), np.float32)
    anomaly_map[rows, frames] = 3 * MAP_FULL_STD
    return anomaly_map


def bar_heights(image: np.ndarray, colour: str, min_px: int = 6) -> list[int]:
    """Heights in pixels of the bars of ``colour``, left to right: runs of columns holding more than
    ``min_px`` pixels of that colour (fewer are the dashes of a threshold line)."""
    counts = pixels_like(image, colour).sum(axis=0)
    heights, run = [], 0
    for count in [*counts, 0]:
        if count > min_px:
            run = max(run, count)
        elif run:
            heights.append(int(run))
            run = 0
    return heights


def dashed_rows(image: np.ndarray, colour: str) -> np.ndarray:
    """Rows where ``colour`` runs across most of the picture: the threshold lines."""
    return np.nonzero(pixels_like(image, colour).mean(axis=1) > 0.4)[0]


# --- the log scale ---------------------------------------------------------------------------------------


def test_score_scale_reaches_from_a_quarter_of_maintenance_to_four_times_severe():
    assert score_scale(Thresholds(10.0, 12.0)) == (2.5, 48.0)
    assert score_scale(Thresholds(10.0, 12.0), [20.0]) == (2.5, 48.0)
    low, high = score_scale(Thresholds(10.0, 12.0), [100.0, None, float("nan")])
    assert (low, high) == (2.5, pytest.approx(130.0))
    # A huge score does not squash the rest: the scale stops at SCALE_CAP_SEVERE times severe.
    assert score_scale(Thresholds(10.0, 12.0), [1e6])[1] == SCALE_CAP_SEVERE * 12.0
    # A tiny one widens the bottom, down to a floor.
    assert score_scale(Thresholds(10.0, 12.0), [0.13])[0] == pytest.approx(0.1)
    assert score_scale(Thresholds(10.0, 12.0), [1e-9, 0.0])[0] == pytest.approx(0.012)
    # A maintenance threshold of zero has no log position; the scale starts below severe instead.
    assert score_scale(Thresholds(0.0, 3.0))[0] > 0


def test_scale_position_is_logarithmic_and_clipped():
    assert scale_position(1.0, 1.0, 100.0) == 0.0
    assert scale_position(10.0, 1.0, 100.0) == pytest.approx(0.5)
    assert scale_position(1e4, 1.0, 100.0) == 1.0
    assert scale_position(0.0, 1.0, 100.0) == scale_position(-3.0, 1.0, 100.0) == 0.0
    assert scale_position(float("nan"), 1.0, 100.0) == 0.0


def test_log_ticks_are_round_and_few_enough():
    assert log_ticks(0.3, 6.0, 8) == [0.5, 1, 2, 5]
    assert log_ticks(0.077, 39.0, 6) == [0.1, 0.3, 1, 3, 10, 30]
    assert log_ticks(0.077, 39.0, 3) == [0.1, 1, 10]
    assert len(log_ticks(1e-3, 1e6, 3)) <= 3


def test_zone_colour_is_the_label_colour():
    thresholds = Thresholds(10.0, 12.0)
    assert [zone_colour(s, thresholds) for s in (9.99, 10.0, 11.9, 12.0)] == [GREEN, AMBER, AMBER, RED]


# --- spectrogram -----------------------------------------------------------------------------------------


def test_spectrogram_picture_shape_and_no_map_without_anomaly():
    spec = log_mel()
    plain = spectrogram_picture(spec, PARAMS, width_px=900, height_px=360)
    assert plain.shape == (360, 900, 3) and plain.dtype == np.uint8
    quiet = spectrogram_picture(spec, PARAMS, np.zeros_like(spec), width_px=900, height_px=360)
    np.testing.assert_array_equal(quiet, plain)
    titled = spectrogram_picture(spec, PARAMS, title="pump <3>.wav", width_px=640, height_px=300)
    assert titled.shape == (300, 640, 3)


def test_spectrogram_colours_come_from_magma_by_level():
    loud = spectrogram_picture(np.full((PARAMS.n_mels, 313), PARAMS.db_max, np.float32), PARAMS)
    silent = spectrogram_picture(np.full((PARAMS.n_mels, 313), PARAMS.db_min - 50, np.float32), PARAMS)
    # The plot fills much of the picture, in magma's top colour for the loud clip, its bottom one for silence.
    assert pixels_like(loud, MAGMA[-1], tolerance=3).mean() > 0.35
    assert pixels_like(silent, MAGMA[0], tolerance=3).mean() > 0.35
    assert pixels_like(loud, MAGMA[0], tolerance=3).mean() < 0.01


def test_low_frequencies_at_the_bottom_and_time_to_the_right():
    def bright_centre(rows: slice, frames: slice) -> tuple[float, float]:
        spec = np.full((PARAMS.n_mels, 313), PARAMS.db_min, np.float32)
        spec[rows, frames] = PARAMS.db_max
        ys, xs = np.nonzero(pixels_like(spectrogram_picture(spec, PARAMS), MAGMA[-1], tolerance=3))
        return ys.mean(), xs.mean()

    low_early = bright_centre(slice(0, 10), slice(0, 40))
    high_late = bright_centre(slice(110, 128), slice(260, 313))
    assert high_late[0] < low_early[0] - 150
    assert high_late[1] > low_early[1] + 0.45 * PICTURE_WIDTH_PX


def test_overlay_is_cyan_where_the_map_is_high():
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
    # Inside the block the overlay colour dominates; at the block's centre it is nearly pure cyan.
    assert pixels_like(early_low[mask_a], MAP_COLOUR, tolerance=60).mean() > 0.5
    centre = early_low[int(np.median(ys_a)), int(np.median(xs_a))]
    assert pixels_like(centre[None], MAP_COLOUR, tolerance=45).all()
    # A map below MAP_FLOOR_STD everywhere leaves the picture as it was.
    np.testing.assert_array_equal(spectrogram_picture(spec, PARAMS, np.full_like(spec, 0.9)), plain)


def test_long_recording_fits_the_same_picture():
    n_frames = 3750  # two minutes
    spec = log_mel(n_frames)
    picture = spectrogram_picture(spec, PARAMS, hot_block(slice(40, 80), slice(3500, 3700), n_frames))
    assert picture.shape == (SPECTROGRAM_HEIGHT_PX, PICTURE_WIDTH_PX, 3)
    ys, xs = np.nonzero(pixels_like(picture, MAP_COLOUR, tolerance=60))
    assert xs.min() > 2 / 3 * PICTURE_WIDTH_PX  # the last seconds: at the right


def test_anomaly_alpha_floor_and_saturation():
    alpha = anomaly_alpha(hot_block(slice(40, 80), slice(100, 200)))
    assert alpha.min() == 0.0 and alpha.max() == 1.0
    assert alpha[60, 150] == 1.0 and alpha[0, 0] == 0.0


def test_spectrogram_has_axis_text_in_its_margins():
    picture = spectrogram_picture(log_mel(), PARAMS)
    ink = pixels_like(picture, "#1f2933", tolerance=60)
    assert ink[:, :100].sum() > 300  # frequency ticks and title on the left
    assert ink[-60:, :].sum() > 300  # time ticks and title at the bottom


def test_map_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        spectrogram_picture(log_mel(), PARAMS, np.zeros((PARAMS.n_mels, 10), np.float32))


# --- timelines -------------------------------------------------------------------------------------------


def test_timeline_bars_take_their_zone_colour():
    thresholds = Thresholds(10.0, 12.0)
    times = np.arange(9) * 1.024
    calm = window_timeline(times, np.full(9, 5.0), thresholds, PARAMS.window_seconds)
    spiky = window_timeline(
        times, np.array([5.0] * 4 + [20.0] + [5.0] * 4), thresholds, PARAMS.window_seconds
    )
    assert calm.shape == (TIMELINE_HEIGHT_PX, PICTURE_WIDTH_PX, 3) and calm.dtype == np.uint8
    assert len(bar_heights(calm, GREEN)) == 9
    assert len(bar_heights(spiky, GREEN)) == 8 and len(bar_heights(spiky[FONT_PX * 2 :], RED)) == 1
    assert pixels_like(spiky, RED).sum() > pixels_like(calm, RED).sum() + 500


def test_timeline_legend_ends_before_the_buttons_over_its_top_right_corner():
    image = window_timeline(np.arange(5) * 1.024, np.full(5, 50.0), Thresholds(12.34, 156.7), PARAMS.window_seconds)
    legend_band = image[: FONT_PX + 16]
    assert pixels_like(legend_band, "#1f2933", tolerance=60)[:, : PICTURE_WIDTH_PX - BUTTONS_PX].sum() > 100
    assert not (legend_band < 200).any(axis=-1)[:, PICTURE_WIDTH_PX - BUTTONS_PX :].any()


def test_timeline_of_an_unfamiliar_recording_is_grey_like_its_verdict():
    thresholds = Thresholds(10.0, 12.0)
    times = np.arange(9) * 1.024
    scores = np.array([5.0] * 4 + [20.0] + [5.0] * 4)
    unfamiliar = window_timeline(times, scores, thresholds, PARAMS.window_seconds, familiar=False)
    assert not bar_heights(unfamiliar, GREEN) and not bar_heights(unfamiliar[FONT_PX * 2 :], RED)
    familiar = window_timeline(times, scores, thresholds, PARAMS.window_seconds)
    assert pixels_like(unfamiliar, MUTED).sum() > pixels_like(familiar, MUTED).sum() + 2000  # the bars
    # The threshold lines too: nothing amber or red in the picture of an unfamiliar recording.
    assert pixels_like(unfamiliar, AMBER).sum() == 0 and pixels_like(unfamiliar, RED).sum() == 0
    assert pixels_like(familiar, AMBER).sum() > 100


def test_live_timeline_greys_only_the_unfamiliar_readings():
    """Live readings are judged one by one: the machine may be unfamiliar for a while (a door opened)."""
    thresholds = Thresholds(10.0, 12.0)
    times = np.arange(9) * 1.0
    scores = np.array([5.0] * 4 + [20.0] * 2 + [5.0] * 3)
    known = np.array([True] * 4 + [False, True] + [True] * 3)
    image = live_timeline(times, scores, thresholds, 2.0, now_s=11.0, familiar=known)
    assert len(bar_heights(image, GREEN)) == 7 and len(bar_heights(image[FONT_PX * 2 :], RED)) == 1
    grey = live_timeline(times, scores, thresholds, 2.0, now_s=11.0, familiar=np.ones(9, bool) & ~known)
    assert len(bar_heights(grey, GREEN)) == 0 and pixels_like(grey, AMBER).sum() > 100  # the lines keep colour


def test_timeline_shows_scores_from_a_tenth_to_thirty():
    # Far-off thresholds, so that every bar is green and only the bars are green.
    scores = np.array([0.1, 0.3, 1.0, 3.0, 10.0, 30.0])
    image = window_timeline(np.arange(6) * 1.024, scores, Thresholds(50.0, 60.0), PARAMS.window_seconds)
    heights = bar_heights(image, GREEN, min_px=0)
    assert len(heights) == 6 and heights[0] > 0
    assert all(b > a + 10 for a, b in zip(heights, heights[1:], strict=False))  # every step shows
    # On a log scale equal ratios are equal steps.
    steps = np.diff(heights)
    assert steps.max() - steps.min() <= 3


def test_timeline_draws_both_thresholds_as_lines_in_their_colours():
    times, scores = np.arange(5) * 1.024, np.full(5, 0.5)
    close = window_timeline(times, scores, BUNDLED, PARAMS.window_seconds)
    (maintenance_rows, severe_rows) = dashed_rows(close, AMBER), dashed_rows(close, RED)
    assert len(maintenance_rows) and len(severe_rows)
    # Severe above maintenance, apart even though the thresholds are within 20 % of each other.
    assert severe_rows.max() < maintenance_rows.min()
    apart = window_timeline(times, scores, Thresholds(1.2736, 15.0), PARAMS.window_seconds)
    assert dashed_rows(apart, RED).max() < severe_rows.min() - 20


def test_timeline_marks_a_score_off_the_scale():
    thresholds = Thresholds(1.0, 2.0)
    times = np.arange(5) * 1.024
    within = window_timeline(times, np.array([0.5, 0.5, 50.0, 0.5, 0.5]), thresholds, PARAMS.window_seconds)
    beyond = window_timeline(times, np.array([0.5, 0.5, 5000.0, 0.5, 0.5]), thresholds, PARAMS.window_seconds)
    # The band between the legend and the plot holds nothing but an overflow triangle.
    band = slice(8 + FONT_PX + 8, 8 + FONT_PX + 8 + 16)
    assert pixels_like(within[band], RED).sum() == 0
    assert pixels_like(beyond[band], RED).sum() > 40


def test_timeline_of_a_single_window_and_of_none():
    image = window_timeline(np.zeros(1), np.array([3.0]), Thresholds(10.0, 12.0), PARAMS.window_seconds)
    assert image.ndim == 3 and pixels_like(image, GREEN).sum() > 100
    empty = window_timeline(np.zeros(0), np.zeros(0), Thresholds(10.0, 12.0), PARAMS.window_seconds)
    assert empty.shape == image.shape and pixels_like(empty, GREEN).sum() == 0


def test_live_timeline_shows_only_the_last_minute():
    starts = np.arange(0.0, 200.0, 1.0)
    scores = np.where(starts < 130, 0.5, 20.0)  # green long ago, red in the last minute
    image = live_timeline(starts, scores, Thresholds(10.0, 12.0), PARAMS.window_seconds, now_s=200.0)
    assert image.shape == (TIMELINE_HEIGHT_PX, PICTURE_WIDTH_PX, 3)
    assert pixels_like(image, GREEN).sum() == 0
    assert len(bar_heights(image[FONT_PX * 2 :], RED)) >= 50
    early = live_timeline(starts[:5], scores[:5], Thresholds(10.0, 12.0), PARAMS.window_seconds, now_s=6.0)
    # Before a minute has been heard the axis already spans one: five bars take a small part of the width.
    xs = np.nonzero(pixels_like(early, GREEN).any(axis=0))[0]
    assert xs.max() - xs.min() < 200


# --- the gauge -------------------------------------------------------------------------------------------


class Elements(HTMLParser):
    """Every element's tag, attributes and own text, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, **dict(attrs), "text": ""}
        element["classes"] = (element.get("class") or "").split()
        element["css"] = dict(
            (k.strip(), v.strip())
            for k, v in (p.split(":", 1) for p in (element.get("style") or "").split(";") if ":" in p)
        )
        self.elements.append(element)
        self.stack.append(element)

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for element in self.stack:
            element["text"] += data

    def of(self, cls: str) -> list[dict]:
        return [e for e in self.elements if cls in e["classes"]]


def pct(value: str) -> float:
    return float(value.rstrip("%"))


def test_gauge_zones_in_order_across_the_whole_bar():
    page = Elements(gauge_html(1.4, BUNDLED))
    zones = page.of("gauge-zone")
    assert [z["data-zone"] for z in zones] == list(LABELS)
    assert [z["css"]["background"] for z in zones] == [GREEN, AMBER, RED]
    lefts = [pct(z["css"]["left"]) for z in zones]
    widths = [pct(z["css"]["width"]) for z in zones]
    assert lefts[0] == 0 and lefts == sorted(lefts) and all(w > 0 for w in widths)
    assert lefts[-1] + widths[-1] == pytest.approx(100, abs=0.01)
    legend = page.of("gauge-zone-name")
    assert [e["text"] for e in legend] == [ZONE_NAMES[label] for label in LABELS]
    assert len(page.of("gauge-bar")) == 1 and page.elements[0]["classes"] == ["gauge"]


def test_gauge_thresholds_sit_at_the_zone_edges_on_opposite_sides_of_their_ticks():
    page = Elements(gauge_html(None, Thresholds(10.0, 12.0)))
    zones = page.of("gauge-zone")
    maintenance, severe = page.of("gauge-threshold-label")
    assert (maintenance["text"], severe["text"]) == ("10.0", "12.0")
    # Maintenance ends at its tick, severe starts at its own: however close, they cannot meet.
    assert 100 - pct(maintenance["css"]["right"]) == pytest.approx(pct(zones[1]["css"]["left"]), abs=0.01)
    assert pct(severe["css"]["left"]) == pytest.approx(pct(zones[2]["css"]["left"]), abs=0.01)
    assert "left" not in maintenance["css"] and "right" not in severe["css"]
    # Positions on the log scale from 2.5 to 48.
    assert pct(severe["css"]["left"]) == pytest.approx(
        100 * math.log(12 / 2.5) / math.log(48 / 2.5), abs=0.01
    )


def test_gauge_marker_follows_the_score_in_its_zone_colour():
    positions, colours = [], []
    for score in (0.5, 1.4, 1.6, 20.0):
        page = Elements(gauge_html(score, BUNDLED))
        (marker,), (number,) = page.of("gauge-marker"), page.of("gauge-score")
        assert marker["css"]["left"] == number["css"]["left"]
        positions.append(pct(marker["css"]["left"]))
        colours.append(marker["css"]["color"])
        assert number["css"]["color"] == marker["css"]["color"]
        assert number["text"].strip() == ("20.0" if score == 20.0 else f"{score:.2f}")
        assert not page.of("gauge-overflow")
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert colours == [GREEN, AMBER, RED, RED]


def test_gauge_overflow_when_the_score_is_far_beyond_severe():
    page = Elements(gauge_html(1000.0, BUNDLED))
    (marker,), (overflow,) = page.of("gauge-marker"), page.of("gauge-overflow")
    assert pct(marker["css"]["left"]) == 100
    assert "off the scale" in overflow["text"]
    assert page.of("gauge-score")[0]["text"].startswith("1000")
    # Forty times severe still fits on the scale.
    assert not Elements(gauge_html(40 * BUNDLED.severe, BUNDLED)).of("gauge-overflow")


def test_gauge_without_a_score_has_no_marker():
    for score in (None, float("nan")):
        page = Elements(gauge_html(score, BUNDLED))
        assert not page.of("gauge-marker") and not page.of("gauge-score")
        assert len(page.of("gauge-zone")) == 3


def test_gauge_of_an_unfamiliar_machine_is_grey_not_red():
    text = gauge_html(30.0, BUNDLED, familiar=False)
    page = Elements(text)
    (marker,), (number,) = page.of("gauge-marker"), page.of("gauge-score")
    assert marker["css"]["color"] == number["css"]["color"] == MUTED
    assert "unfamiliar" in page.elements[0]["aria-label"]
    assert RED not in (marker["style"] + number["style"])
    # The needle is not in a coloured zone: the zones and their swatches are shades of grey.
    assert not any(colour in text for colour in (GREEN, AMBER, RED))
    zones = page.of("gauge-zone")
    assert [z["css"]["background"] for z in zones] == [NEUTRAL_ZONE_COLOURS[label] for label in LABELS]
    assert "gauge-neutral" in page.elements[0]["classes"]
    assert all(colour in gauge_html(30.0, BUNDLED) for colour in (GREEN, AMBER, RED))


def test_gauge_styles_are_scoped_and_text_escaped():
    text = gauge_html(1.4, BUNDLED)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", style) for s in block.split(",")]
    assert selectors and all(s.startswith(".gauge ") or s == ".gauge" for s in selectors)
    assert "<script" not in text
    # Everything after the style block is markup whose attributes parse: the aria-label is escaped text.
    label = Elements(text).elements[0]["aria-label"]
    assert "1.40" in label and "<" not in label


def test_gauge_thresholds_near_the_ends_of_the_bar_stay_inside_it():
    page = Elements(gauge_html(5.0, Thresholds(0.0, 3.0)))
    maintenance, severe = page.of("gauge-threshold-label")
    assert pct(maintenance["css"]["left"]) == 0 and pct(severe["css"]["left"]) > 20
    # Severe ten thousand times maintenance: both ticks near the ends, both labels turned inwards.
    maintenance, severe = Elements(gauge_html(None, Thresholds(0.01, 100.0))).of("gauge-threshold-label")
    assert pct(maintenance["css"]["left"]) < 15 and pct(severe["css"]["right"]) < 15
    assert "right" not in maintenance["css"] and "left" not in severe["css"]


# --- the batch trend -------------------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def trend(names, scores, thresholds=BUNDLED) -> ET.Element:
    return ET.fromstring(batch_trend_svg(names, scores, thresholds))


def points(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if "trend-point" in g.get("class", "").split()]


def test_trend_has_one_point_per_file_with_its_name_on_hover():
    names = [f"pump_{i}.wav" for i in range(1, 7)]
    scores = [0.5, 1.3, 1.6, 30.0, 0.2, 3.0]
    svg = trend(names, scores)
    assert svg.get("class") == "trend" and svg.get("viewBox") and svg.get("width") == "100%"
    found = points(svg)
    assert len(found) == 6
    titles = [g.find(f"{SVG}title").text for g in found]
    assert titles[0] == "pump_1.wav: 0.50 (NORMAL)"
    assert titles[3] == "pump_4.wav: 30.0 (SEVERE ANOMALY)"
    circles = [g.find(f"{SVG}circle") for g in found]
    assert [c.get("fill") for c in circles] == [GREEN, AMBER, RED, RED, GREEN, RED]
    xs = [float(c.get("cx")) for c in circles]
    ys = [float(c.get("cy")) for c in circles]
    assert xs == sorted(xs) and len(set(xs)) == 6  # upload order, left to right
    order = np.argsort(scores)
    assert list(np.argsort(-np.asarray(ys))) == list(order)  # higher score, higher point


def test_trend_thresholds_are_dashed_labelled_lines():
    svg = trend(["a.wav", "b.wav"], [0.5, 1.0])
    groups = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "trend-threshold"]
    assert [g.get("data-threshold") for g in groups] == ["maintenance", "severe"]
    lines = [g.find(f"{SVG}line") for g in groups]
    assert all(line.get("stroke-dasharray") for line in lines)
    assert [line.get("stroke") for line in lines] == [AMBER, RED]
    assert float(lines[1].get("y1")) < float(lines[0].get("y1"))  # severe above maintenance
    assert ["".join(g.itertext()) for g in groups] == ["maintenance 1.27", "severe 1.50"]


def test_trend_marks_failed_files_and_escapes_names():
    names = ["ok.wav", "<script>alert(1)</script>.wav", "broken & bad.mp3", 'quote".wav']
    text = batch_trend_svg(names, [0.5, 1.0, None, 2000.0], BUNDLED)
    assert "<script>" not in text
    svg = ET.fromstring(text)
    found = points(svg)
    assert [g.find(f"{SVG}title").text for g in found] == [
        "ok.wav: 0.50 (NORMAL)",
        "<script>alert(1)</script>.wav: 1.00 (NORMAL)",
        "broken & bad.mp3: failed",
        'quote".wav: 2000 (SEVERE ANOMALY)',
    ]
    failed = found[2]
    assert "trend-failed" in failed.get("class") and failed.find(f"{SVG}circle") is None
    assert failed.find(f"{SVG}path").get("stroke") == MUTED
    # Off the scale: a triangle at the top rather than a circle somewhere above the picture.
    assert found[3].find(f"{SVG}circle") is None and found[3].find(f"{SVG}path").get("fill") == RED


def test_trend_draws_unfamiliar_files_grey_like_the_table():
    labels = ["NORMAL", "Unfamiliar machine: adapt first", None, "SEVERE ANOMALY"]
    names = ["a.wav", "b.wav", "c.wav", "d.wav"]
    svg = ET.fromstring(batch_trend_svg(names, [0.5, 30.0, None, 30.0], BUNDLED, labels))
    found = points(svg)
    assert [g.get("data-zone") for g in found] == ["NORMAL", UNFAMILIAR, None, "SEVERE ANOMALY"]
    assert found[1].find(f"{SVG}circle").get("fill") == MUTED
    assert found[1].find(f"{SVG}title").text == f"b.wav: 30.0 ({UNFAMILIAR})"
    assert found[3].find(f"{SVG}circle").get("fill") == RED
    with pytest.raises(ValueError):
        batch_trend_svg(["a.wav"], [1.0], BUNDLED, ["NORMAL", "NORMAL"])


def test_trend_of_no_files_and_mismatched_lists():
    assert points(trend([], [])) == []
    with pytest.raises(ValueError, match="names"):
        batch_trend_svg(["a.wav"], [], BUNDLED)
