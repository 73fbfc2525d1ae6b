"""A machine's record (anomaly/ui/record.py), without a browser: bounded, forgiving of what a browser sends
back, its trend named in words, its CSV and its picture."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest

from anomaly.calibration import Calibration
from anomaly.scoring import LABELS, UNFAMILIAR, Thresholds
from anomaly.ui import record
from anomaly.ui.record import MAX_MACHINES, MAX_READINGS, Machine, Reading

THRESHOLDS = Thresholds(maintenance=1.0, severe=2.0)
T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def reading(score: float, *, at: dt.timedelta = dt.timedelta(0), file: str = "week.wav") -> Reading:
    return Reading(T0 + at, file, score, THRESHOLDS.label(score))


def kept(stored: dict | None) -> dict | None:
    """What the browser gives back: the JSON it was handed."""
    return None if stored is None else json.loads(json.dumps(stored))


def test_readings_are_kept_in_order_and_bounded_per_machine():
    stored = None
    for i in range(MAX_READINGS + 10):
        stored = kept(record.with_reading(stored, "pump", "Pump 3", reading(0.5, at=dt.timedelta(hours=i))))
    machine = record.machines_of(stored)["pump"]
    assert machine.name == "Pump 3" and len(machine.readings) == MAX_READINGS
    assert machine.readings[0].time == T0 + dt.timedelta(hours=10)  # the oldest ten went
    assert [r.time for r in machine.readings] == sorted(r.time for r in machine.readings)


def test_the_most_recently_used_machines_are_kept():
    stored = None
    for i in range(MAX_MACHINES + 2):
        stored = kept(record.with_reading(stored, f"m{i}", f"Machine {i}", reading(0.5)))
    assert "m1" not in record.machines_of(stored)  # the oldest went
    stored = kept(record.with_reading(stored, "m2", "Machine 2", reading(0.6)))  # used again ...
    stored = kept(record.with_reading(stored, "new", "New", reading(0.6)))  # ... so m3 goes, not m2
    machines = record.machines_of(stored)
    assert len(machines) == MAX_MACHINES and "m2" in machines and "m3" not in machines
    assert [r.score for r in machines["m2"].readings] == [0.5, 0.6]


def test_forgetting_a_machine_removes_its_record_and_the_entry_when_none_is_left():
    stored = kept(record.with_reading(None, "a", "A", reading(0.5)))
    stored = kept(record.with_reading(stored, "b", "B", reading(0.7)))
    left = kept(record.without_machine(stored, "a"))
    assert set(record.machines_of(left)) == {"b"}
    assert record.without_machine(left, "b") is None  # None: the browser's entry is removed


def test_what_a_browser_sends_back_is_checked_reading_by_reading():
    good = ["2026-11-02T08:00:00Z", "ok.wav", 0.4, LABELS[0]]
    bad_rows = [
        ["2026-11-02T08:00:00Z", "nan.wav", float("nan"), LABELS[0]],
        ["2026-11-02T08:00:00Z", "bool.wav", True, LABELS[0]],
        ["2026-11-02T08:00:00Z", "label.wav", 0.4, "<b>FINE</b>"],
        ["yesterday", "time.wav", 0.4, LABELS[0]],
        ["2026-11-02T08:00:00Z", "short.wav", 0.4],
        "not a row",
    ]
    stored = {"format": 1, "machines": {"m": {"name": "M", "readings": [*bad_rows, good]}, "x" * 100: {}}}
    machines = record.machines_of(json.loads(json.dumps(stored, allow_nan=True)))
    assert list(machines) == ["m"] and [r.file for r in machines["m"].readings] == ["ok.wav"]
    for junk in (None, "text", [], {"format": 99, "machines": {}}, {"format": 1, "machines": []}):
        assert record.machines_of(junk) == {}
    long_name = {"format": 1, "machines": {"m": {"name": "n" * 500, "readings": [[*good[:1], "f" * 900, *good[2:]]]}}}
    machine = record.machines_of(long_name)["m"]
    assert len(machine.name) == record.MAX_NAME_CHARS and len(machine.readings[0].file) == record.MAX_FILE_CHARS


def test_three_readings_in_a_row_at_maintenance_are_named_rising():
    steady = [reading(0.5, at=dt.timedelta(days=d)) for d in range(5)]
    two = [*steady, reading(1.2, at=dt.timedelta(days=5)), reading(1.0, at=dt.timedelta(days=6))]
    assert record.trend_words(two, THRESHOLDS) is None
    three = [*two, reading(2.5, at=dt.timedelta(days=7))]
    words = record.trend_words(three, THRESHOLDS)
    assert words.startswith("Rising: the last 3 readings in a row") and "1.00" in words
    broken = [*three, reading(0.8, at=dt.timedelta(days=8))]  # back under: the run is over
    assert record.trend_words(broken, THRESHOLDS) is None


def test_a_steady_climb_over_a_week_is_named_with_when_it_reaches_maintenance():
    climb = [reading(0.3 + 0.08 * d, at=dt.timedelta(days=d)) for d in range(7)]  # 0.30 to 0.78
    words = record.trend_words(climb, THRESHOLDS)
    assert words.startswith("Climbing: over the last 6 days (7 readings)") and "0.30 to 0.78" in words
    assert re.search(r"reaches the maintenance threshold in about [23] days", words), words
    # The same rise within hours, a flat noisy week, and a fall: nothing to name.
    fast = [reading(0.3 + 0.08 * h, at=dt.timedelta(hours=h)) for h in range(7)]
    flat = [reading(0.5 + (0.05 if d % 2 else -0.05), at=dt.timedelta(days=d)) for d in range(7)]
    assert record.trend_words(fast, THRESHOLDS) is None
    assert record.trend_words(flat, THRESHOLDS) is None
    assert record.trend_words(climb[::-1], THRESHOLDS) is None
    # Readings older than a week do not count toward the climb.
    old = [reading(0.2 + 0.1 * d, at=dt.timedelta(days=d - 30)) for d in range(5)]
    assert record.trend_words([*old, reading(0.5, at=dt.timedelta(days=1))], THRESHOLDS) is None


def test_csv_has_a_row_per_reading_and_no_formula_cells():
    machine = Machine("Pump", (reading(0.5, file="=HYPERLINK(x).wav"), reading(1.5, at=dt.timedelta(days=1))))
    rows = list(csv.reader(io.StringIO(record.csv_text(machine))))
    assert rows[0] == record.CSV_COLUMNS and len(rows) == 3
    assert rows[1] == ["2026-11-02T08:00:00Z", "'=HYPERLINK(x).wav", "0.5", LABELS[0]]
    assert rows[2][3] == LABELS[1]


def test_the_picture_has_a_point_per_reading_and_the_thresholds():
    readings = (
        reading(0.5, file="<script>.wav"),
        reading(1.5, at=dt.timedelta(days=2)),
        Reading(T0 + dt.timedelta(days=3), "odd.wav", 40.0, UNFAMILIAR),
    )
    svg = record.trend_svg(Machine("Pump <3>", readings), THRESHOLDS)
    assert svg.count('class="record-point"') == 3
    assert 'data-threshold="maintenance"' in svg and 'data-threshold="severe"' in svg
    assert "<script>" not in svg and "&lt;script&gt;.wav" in svg and "Pump &lt;3&gt;" in svg
    assert "2026-11-02" in svg and "2026-11-05" in svg  # the ends of the time axis, in days
    assert "no readings yet" in record.trend_svg(Machine("Pump"), THRESHOLDS)


def test_a_machine_is_its_calibration_whatever_it_is_named(tiny_calibration, tiny_detector, tmp_path):
    """The same calibration saved, loaded and renamed is the same machine; another calibration is not."""
    calibration = tiny_detector.load_calibration(tiny_calibration)
    same = record.machine_key(calibration)
    again = tiny_detector.load_calibration(calibration.named("Pump 3, east hall").save(tmp_path / "again.npz"))
    assert record.machine_key(again) == same and record.machine_name(again) == "Pump 3, east hall"
    other = Calibration(calibration.scorer, {**calibration.meta, "created": "2026-11-03T08:00:00+00:00"})
    assert record.machine_key(other) != same
    assert record.machine_name(calibration.named(None)) == "your machine"


def test_the_summary_says_how_many_readings_and_names_the_trend():
    rising = Machine("Pump *3*", tuple(reading(s, at=dt.timedelta(hours=h)) for h, s in enumerate([0.5, 1.1, 1.2, 1.3])))
    text = record.summary(rising, THRESHOLDS)
    assert "Pump \\*3\\*" in text and "4 readings" in text and "**Rising:" in text
    assert "No readings yet" in record.summary(Machine("Pump"), THRESHOLDS)


# --- on the page's handlers (app.py built in this process for the tiny model) ------------------------------


def test_analyses_against_a_calibration_join_its_record_and_forget_removes_it(
    app_module, tiny_calibration, tiny_corpus
):
    from anomaly.ui.session import Session

    page, c = app_module.page, app_module.c
    calibration = app_module.runtime.detector.load_calibration(tiny_calibration)
    session = Session(calibration=calibration)
    clip = str(sorted((tiny_corpus / "train").glob("*source*"))[6])  # a normal clip it was not calibrated on

    kept = None
    for n in (1, 2, 3):
        out = page.show_analysis(clip, True, session, kept)
        kept = json.loads(json.dumps(out[c.record]))  # what the browser hands back
        assert out[c.record_box].visible is True
        assert f"{n} reading" in out[c.record_text] and "Record of Pump 3" in out[c.record_text]
        assert out[c.record_trend].count('class="record-point"') == n
    machine = record.machines_of(kept)[record.machine_key(calibration)]
    assert [r.file for r in machine.readings] == [Path(clip).name] * 3
    assert machine.readings[-1].score == pytest.approx(out[c.last].score, abs=1e-4)  # kept to 4 decimals
    rows = list(csv.reader(io.StringIO(Path(out[c.record_csv]).read_text())))
    assert len(rows) == 4 and rows[1][1] == Path(clip).name

    # Against the demo model: nothing is added and the record is not shown.
    demo = page.show_analysis(clip, True, None, kept)
    assert c.record not in demo and demo[c.record_box].visible is False

    # Thresholds by hand: the record's lines and words follow them.
    assert out[c.last].label == "NORMAL" and "Rising" not in out[c.record_text]
    low = min(r.score for r in machine.readings) / 10
    moved = page.set_thresholds(low, 2 * low, True, session, out[c.last], kept)
    assert f"maintenance {low:.2f}" in moved[c.record_trend]
    assert "**Rising: the last 3 readings in a row" in moved[c.record_text]

    forgotten = page.forget_calibration(True, session, out[c.last], kept)
    assert forgotten[c.record] is None and forgotten[c.record_box].visible is False
