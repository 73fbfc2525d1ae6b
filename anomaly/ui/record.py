"""A machine's record: every reading of a machine the visitor adapted to, kept in their browser.

Maintenance teams judge a machine by its trend, not one reading. Each analysis against a user's calibration
adds a reading (time, file name, score, label) to that machine's record, which the browser keeps in a
``gr.BrowserState`` of its own next to the calibration (``session.browser_store``): plain JSON,
``{"format": 1, "machines": {key: {"name": ..., "readings": [[time, file, score, label], ...]}}}``, the last
``MAX_READINGS`` of at most ``MAX_MACHINES`` machines. A machine is its calibration (``machine_key``), so a
record comes back when the same calibration file is loaded again, and goes when it is forgotten.

Everything here is a plain function of plain values: the page's handlers (``anomaly.ui.page``) call them.
What the browser sends back is untrusted (gradio's store is keyed by a public secret): ``machines_of``
keeps only well-formed readings and never raises.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import json
import math
from dataclasses import dataclass

from scipy import stats

from anomaly.calibration import Calibration
from anomaly.plots import (
    LABEL_COLOURS,
    MUTED,
    format_score,
    log_ticks,
    scale_position,
    score_scale,
    svg_chart_open,
    svg_num,
    svg_score_axes,
)
from anomaly.scoring import LABELS, VERDICTS, Thresholds
from anomaly.ui.serving import spreadsheet_safe
from anomaly.ui.views import plain_text

RECORD_KEY = "gearbox-sound-check-record"
RECORD_FORMAT = 1
MAX_READINGS = 500  # per machine: about 35 kB of JSON
MAX_MACHINES = 8  # the most recently used are kept
MAX_FILE_CHARS = 200
MAX_NAME_CHARS = 80
# "Rising": this many readings in a row at or above the maintenance threshold, ...
RISING_RUN = 3
# ... or a steady climb over the last week: enough readings, over enough days, rising together (Spearman's
# rank correlation with time) by a fair share of the maintenance threshold.
CLIMB_WINDOW = dt.timedelta(days=7)
CLIMB_MIN_READINGS = 4
CLIMB_MIN_SPAN = dt.timedelta(days=2)
CLIMB_MIN_RHO = 0.8
CLIMB_MIN_RISE = 0.2  # of the maintenance threshold
CSV_COLUMNS = ["time_utc", "file", "score", "label"]


@dataclass(frozen=True)
class Reading:
    """One analysis of the machine: when (UTC), which file, its score and label."""

    time: dt.datetime
    file: str
    score: float
    label: str

    def as_row(self) -> list:
        return [_iso(self.time), self.file, round(self.score, 4), self.label]


@dataclass(frozen=True)
class Machine:
    """A machine's record: its name and its readings, oldest first."""

    name: str
    readings: tuple[Reading, ...] = ()


def machine_key(calibration: Calibration) -> str:
    """Which machine a calibration is: a digest of when and with which model it was made and what it holds
    (its thresholds and held-out normal scores), not of its name (a calibration loaded again under another
    name is the same machine) nor of what a saved file adds to its meta."""
    meta = calibration.meta
    identity = {
        "created": meta.get("created"),
        "encoder_sha256": meta.get("encoder_sha256"),
        "n_clips": meta.get("n_clips"),
        "thresholds": calibration.thresholds.to_dict(),
        "normal_scores": [float(v) for v in calibration.normal_scores],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]


def machine_name(calibration: Calibration) -> str:
    return str(calibration.meta.get("name") or "your machine")[:MAX_NAME_CHARS]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(time: dt.datetime) -> str:
    return time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reading(row: object) -> Reading | None:
    """A reading from what the browser kept, or None when it is not one."""
    if not isinstance(row, list | tuple) or len(row) != 4:
        return None
    time, file, score, label = row
    if not (isinstance(time, str) and isinstance(file, str) and isinstance(label, str)):
        return None
    if label not in VERDICTS or isinstance(score, bool) or not isinstance(score, int | float):
        return None
    try:
        when = dt.datetime.strptime(time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    if not math.isfinite(score):
        return None
    return Reading(when, file[:MAX_FILE_CHARS], float(score), label)


def machines_of(stored: object) -> dict[str, Machine]:
    """The records a browser kept, well-formed readings only, in time order; ``{}`` for anything else."""
    if not isinstance(stored, dict) or stored.get("format") != RECORD_FORMAT:
        return {}
    machines = stored.get("machines")
    if not isinstance(machines, dict):
        return {}
    out = {}
    for key, entry in list(machines.items())[-MAX_MACHINES:]:
        if not isinstance(key, str) or len(key) > 64 or not isinstance(entry, dict):
            continue
        rows = entry.get("readings")
        rows = rows[-MAX_READINGS:] if isinstance(rows, list) else []
        readings = sorted((r for r in map(_reading, rows) if r is not None), key=lambda r: r.time)
        name = entry.get("name")
        out[key] = Machine(name[:MAX_NAME_CHARS] if isinstance(name, str) else "your machine", tuple(readings))
    return out


def stored_records(machines: dict[str, Machine]) -> dict | None:
    """What the browser keeps of ``machines`` (None, which removes the entry, when there is none)."""
    if not machines:
        return None
    kept = list(machines.items())[-MAX_MACHINES:]
    return {
        "format": RECORD_FORMAT,
        "machines": {
            key: {"name": m.name, "readings": [r.as_row() for r in m.readings[-MAX_READINGS:]]} for key, m in kept
        },
    }


def with_reading(stored: object, key: str, name: str, reading: Reading) -> dict:
    """The kept records with ``reading`` added to machine ``key`` (now its most recently used), bounded."""
    machines = machines_of(stored)
    machine = machines.pop(key, Machine(name))
    machines[key] = Machine(name, (*machine.readings, reading)[-MAX_READINGS:])
    return stored_records(machines)


def without_machine(stored: object, key: str) -> dict | None:
    """The kept records without machine ``key`` (None when nothing is left: the browser's entry goes)."""
    machines = machines_of(stored)
    machines.pop(key, None)
    return stored_records(machines)


def trend_words(readings: tuple[Reading, ...] | list[Reading], thresholds: Thresholds) -> str | None:
    """A rising trend named in words, or None: ``RISING_RUN`` readings in a row at or above the maintenance
    threshold, or a steady climb over the last week."""
    if not readings:
        return None
    run = 0
    for reading in reversed(readings):
        if reading.score < thresholds.maintenance:
            break
        run += 1
    if run >= RISING_RUN:
        return (
            f"Rising: the last {run} readings in a row are at or above the maintenance threshold "
            f"({format_score(thresholds.maintenance)}). Plan maintenance."
        )
    latest = readings[-1].time
    week = [r for r in readings if latest - r.time <= CLIMB_WINDOW]
    if len(week) < CLIMB_MIN_READINGS or week[-1].time - week[0].time < CLIMB_MIN_SPAN:
        return None
    days = [(r.time - week[0].time).total_seconds() / 86400 for r in week]
    scores = [r.score for r in week]
    rho = stats.spearmanr(days, scores).statistic
    fit = stats.linregress(days, scores)
    rise = fit.slope * days[-1]
    if not (rho >= CLIMB_MIN_RHO and rise >= CLIMB_MIN_RISE * thresholds.maintenance):
        return None
    words = (
        f"Climbing: over the last {days[-1]:.0f} days ({len(week)} readings) the score rose steadily from "
        f"{format_score(scores[0])} to {format_score(scores[-1])}."
    )
    fitted_now = fit.intercept + fit.slope * days[-1]
    if fitted_now < thresholds.maintenance:
        to_go = (thresholds.maintenance - fitted_now) / fit.slope
        words += f" At this pace it reaches the maintenance threshold in about {max(to_go, 1):.0f} days."
    return words


def summary(machine: Machine, thresholds: Thresholds) -> str:
    """The record's heading and what it says, as Markdown."""
    n = len(machine.readings)
    head = f"### Record of {plain_text(machine.name)}\n"
    if not n:
        return head + "No readings yet: every recording analysed against this machine is added here."
    first, last = machine.readings[0], machine.readings[-1]
    line = (
        f"{n} reading{'s' if n != 1 else ''} from {first.time:%Y-%m-%d %H:%M} to {last.time:%Y-%m-%d %H:%M} "
        f"UTC, kept in this browser (the last {MAX_READINGS}). Latest: {format_score(last.score)}, {last.label}."
    )
    words = trend_words(machine.readings, thresholds)
    return head + line + (f"\n\n**{words}**" if words else "")


def csv_text(machine: Machine) -> str:
    """The record as CSV (a file name a spreadsheet would run as a formula starts with a single quote)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for reading in machine.readings:
        writer.writerow([spreadsheet_safe(v) for v in reading.as_row()])
    return out.getvalue()


# The picture: as the batch's trend (anomaly.charts), with time on x.
WIDTH, HEIGHT, FONT = 520, 280, 21  # 12 px text or more when the picture is 300 px wide (a phone)
MAX_PX = 600


def trend_svg(machine: Machine, thresholds: Thresholds) -> str:
    """The record's scores over time as an inline SVG for ``gr.HTML``: one point per reading at its time,
    coloured by its label, on the log score scale; the thresholds dashed and named above the plot. Each point's
    ``<title>`` says when, which file, the score and the label.

    Classes: ``record-trend`` (the ``<svg>``), ``record-point`` (one ``<g>`` per reading).
    """
    readings = machine.readings
    scores = [r.score for r in readings]
    low, high = score_scale(thresholds, scores)
    W, H, F = WIDTH, HEIGHT, FONT
    top, bottom = 12 + F + 14, 2 * F + 22
    plot_h = H - top - bottom
    y_ticks = log_ticks(low, high, max(2, plot_h // (F + 10)))
    left = 12 + F + 6 + max(len(f"{v:g}") for v in y_ticks) * 0.58 * F + 10
    plot_w = W - left - 12
    plot_bottom, plot_right = top + plot_h, left + plot_w
    inset = 14
    start = readings[0].time if readings else now()
    span = max((readings[-1].time - start).total_seconds(), 1.0) if readings else 1.0
    # x follows time, but readings closer than a point apart (several in a minute, in a record of weeks)
    # are moved apart in order, so that every one is seen.
    at = [(r.time - start).total_seconds() / span for r in readings]
    gap = min(0.02, 1 / max(len(at) - 1, 1))
    for i in range(1, len(at)):
        at[i] = max(at[i], at[i - 1] + gap)
    if at and at[-1] > 1:
        at = [a / at[-1] for a in at]

    def x_of(i: int) -> float:
        if len(readings) == 1:
            return left + plot_w / 2
        return left + inset + at[i] * (plot_w - 2 * inset)

    def y_of(value: float) -> float:
        return plot_bottom - scale_position(value, low, high) * plot_h

    f = svg_num
    text = f'font-size="{F}" fill="currentColor"'
    aria = f"{len(readings)} readings of {machine.name} over time"
    parts = [svg_chart_open("record-trend", W, H, MAX_PX, aria)]
    parts += svg_score_axes(left, top, plot_right, plot_bottom, y_ticks, y_of, F)
    if readings:  # the first and last times under the axis, in the record's own unit
        fmt = "%Y-%m-%d" if span >= 2 * 86400 else "%H:%M:%S" if span < 86400 else "%d %b %H:%M"
        ends = [(0, "start")] + ([(len(readings) - 1, "end")] if len(readings) > 1 else [])
        for i, anchor in ends:
            reading = readings[i]
            parts.append(
                f'<text x="{f(x_of(i))}" y="{f(plot_bottom + 6)}" {text} text-anchor="{anchor}" '
                f'dominant-baseline="hanging">{reading.time.strftime(fmt)}</text>'
            )
    parts.append(
        f'<text x="{f(left + plot_w / 2)}" y="{H - 4}" {text} text-anchor="middle">time (UTC)</text>'
        f'<text transform="translate({12 + F * 0.8} {f(top + plot_h / 2)}) rotate(-90)" {text} '
        f'text-anchor="middle">score</text>'
    )
    if len(readings) > 1:
        path = "".join(f"{'L' if i else 'M'}{f(x_of(i))} {f(y_of(r.score))}" for i, r in enumerate(readings))
        parts.append(f'<path d="{path}" fill="none" stroke="{MUTED}" stroke-opacity="0.5" stroke-width="1.5"/>')
    legend_y = 6 + F / 2
    for k, (value, name, label) in enumerate(
        ((thresholds.maintenance, "maintenance", LABELS[1]), (thresholds.severe, "severe", LABELS[2]))
    ):
        y, x = y_of(value), 12 + k * (W - 24) / 2  # the whole width: the two names never meet
        parts.append(
            f'<g class="trend-threshold" data-threshold="{name}">'
            f'<line x1="{f(left)}" x2="{f(plot_right)}" y1="{f(y)}" y2="{f(y)}" '
            f'stroke="{LABEL_COLOURS[label]}" stroke-width="2" stroke-dasharray="8 5"/>'
            f'<line x1="{f(x)}" x2="{f(x + 30)}" y1="{f(legend_y)}" y2="{f(legend_y)}" '
            f'stroke="{LABEL_COLOURS[label]}" stroke-width="3" stroke-dasharray="8 3"/>'
            f'<text x="{f(x + 38)}" y="{f(legend_y)}" {text} dominant-baseline="middle">'
            f"{name} {format_score(value)}</text></g>"
        )
    for i, reading in enumerate(readings):
        colour = LABEL_COLOURS.get(reading.label, MUTED)
        title = f"{_iso(reading.time)} {reading.file}: {format_score(reading.score)} ({reading.label})"
        parts.append(
            f'<g class="record-point" data-index="{i + 1}" data-label="{html.escape(reading.label)}">'
            f"<title>{html.escape(title)}</title>"
            f'<circle cx="{f(x_of(i))}" cy="{f(y_of(reading.score))}" r="5" fill="{colour}" '
            f'stroke="#fff" stroke-width="1"/></g>'
        )
    if not readings:
        parts.append(
            f'<text x="{f(left + plot_w / 2)}" y="{f(top + plot_h / 2)}" {text} text-anchor="middle" '
            f'fill-opacity="0.6">no readings yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
