"""The handlers of the Listen live tab: a microphone stream scored every second, a summary at Stop.

``LivePage`` holds the shared ``Runtime`` and the page's components; each handler returns a dict keyed by the
components it changes. One ``anomaly.live.LiveSession`` per visitor keeps the recent audio and the history.
"""

from __future__ import annotations

import logging
import os
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np

from anomaly.charts import live_timeline
from anomaly.detector import Detector
from anomaly.gauge import gauge_html
from anomaly.live import NO_SOUND, LiveReading, LiveSession
from anomaly.scoring import LABELS, UNFAMILIAR
from anomaly.ui.runtime import Runtime
from anomaly.ui.serving import INTERNAL_ERROR, internal_message
from anomaly.ui.session import Session, detector_for
from anomaly.ui.streams import read_chunk
from anomaly.ui.views import UNFAMILIAR_VERDICT, verdict_colour

log = logging.getLogger("anomaly.ui")


LISTENING = "Listening…"


def live_verdict(reading: LiveReading | None) -> str:
    """What the verdict box says: the label, or in a few words what is wrong with the sound."""
    if reading is None:
        return "Waiting for the microphone…"
    if reading.problem is not None:
        return reading.problem.split(":")[0].rstrip(".")
    return UNFAMILIAR_VERDICT if reading.label == UNFAMILIAR else reading.label


# From the most to the least worrying: a session's headline names the first level it spent time at.
LEVEL_ORDER = (LABELS[2], LABELS[1], UNFAMILIAR, LABELS[0], NO_SOUND)


def session_shares(live: LiveSession) -> list[tuple[str, float]]:
    """(level, % of the scored time) for each level the session spent time at, the most worrying first."""
    seconds = live.summary()["seconds_at"]
    total = sum(seconds.values())
    if not total:
        return []
    return [(level, 100.0 * seconds[level] / total) for level in LEVEL_ORDER if seconds.get(level)]


def session_headline(live: LiveSession) -> str:
    """The verdict box after Stop: the worst level heard and for how much of the time, never only the last
    reading (a session a third SEVERE that ended NORMAL must not read NORMAL)."""
    shares = session_shares(live)
    if not shares:
        return "Nothing scored"
    level, share = shares[0]
    name = UNFAMILIAR_VERDICT if level == UNFAMILIAR else level
    return name if share >= 99.5 else f"{name} {share:.0f} % of the time"


def live_status(live: LiveSession, elapsed_ms: float | None = None) -> str:
    """One line on what is happening, with the full text of any problem."""
    r = live.last
    heard = f"Listening: {live.heard_s:.0f} s heard."
    if r is None and live.heard_s <= 0:
        return f"Waiting for sound from the microphone; the first verdict comes {live.window_s:.1f} s after it starts."
    if r is None:
        return (
            f"Listening: {live.heard_s:.1f} s heard; the first verdict comes once {live.window_s:.1f} s have been "
            "heard."
        )
    if r.problem is not None:
        return f"{heard} ⚠️ {r.problem}"
    line = f"{heard} Last {live.window_s:.1f} s: score **{r.score:.2f}** -> **{r.label}**"
    if not r.familiar:
        line += (
            " (this sound is unlike anything the model was told is normal: adapt it to your machine first)"
        )
    if elapsed_ms is not None:
        line += f"; processed in {elapsed_ms:.0f} ms"
    return line + "."


def live_alarms(live: LiveSession) -> str:
    """The recent alarms, latest first."""
    if not live.alarms:
        return "**Alarms:** none so far."
    rows = [
        f"- {a.clock} (at {a.time_s:.0f} s): **{a.label}**, score {a.score:.2f}"
        for a in reversed(live.alarms)
    ]
    return "**Alarms** (latest first):\n" + "\n".join(rows)


def live_summary(live: LiveSession) -> str:
    """The stop summary, for people."""
    facts = live.summary()
    if not facts["readings"] or not session_shares(live):
        if live.heard_s <= 0:
            why = "no sound reached the app from the microphone (is it allowed, and is this page still online?)"
        else:
            why = f"only {live.heard_s:.2f} s of sound arrived, and the first verdict needs {live.window_s:.2f} s"
        return f"#### Summary\nNothing was scored: {why}."
    seconds_at = facts["seconds_at"]
    shares = session_shares(live)
    rows = [f"| {level} | {seconds_at[level]:.0f} s | {share:.0f} % |" for level, share in shares]
    level, share = shares[0]
    others = ", ".join(f"{name} {pct:.0f} %" for name, pct in shares[1:])
    lines = [
        "#### Summary",
        f"**Worst level heard: {level}**, {share:.0f} % of the time" + (f" ({others})." if others else "."),
        "",
        f"Listened for {facts['listened_s']:.0f} s ({facts['readings']} readings, one a second).",
        "",
        "| level | time | share |",
        "|---|---|---|",
        *rows,
        "",
    ]
    worst = facts["worst"]
    if worst is not None:
        lines.append(
            f"**Worst moment:** at {worst['time_s']:.0f} s of listening, score **{worst['score']:.2f}** "
            f"({worst['label']}). Its {live.worst_clip_s:.0f} s of sound are below to download."
        )
    alarms = facts["alarms"]
    lines.append(f"**Alarms:** {len(alarms)}{' (listed above, latest first)' if alarms else ''}.")
    return "\n".join(lines)


class LivePage:
    """The Listen live tab's handlers, bound to its components ``c`` and the shared ``runtime``."""

    def __init__(self, runtime: Runtime, c: SimpleNamespace):
        self.runtime = runtime
        self.c = c

    def _detector(self, session: Session | None) -> Detector:
        return detector_for(self.runtime.detector, session)

    def _pictures(self, live: LiveSession, detector: Detector) -> tuple[str | None, np.ndarray]:
        """The gauge at the last score (None before the first) and the rolling timeline of the last minute."""
        t = detector.thresholds
        last = live.last
        gauge = (
            gauge_html(last.score, t, familiar=last.label != UNFAMILIAR)
            if last is not None and last.score is not None
            else None
        )
        starts, scores = live.timeline()
        timeline = live_timeline(
            starts, scores, t, live.window_s, now_s=live.heard_s, span_s=live.history_s,
            familiar=live.timeline_familiar(),
        )
        return gauge, timeline

    @staticmethod
    def _label(text: str) -> gr.Label:
        return gr.Label(value=text, color=verdict_colour(text))

    def start(self, session: Session | None) -> dict:
        """A new listening session: empty history, the last summary and downloads cleared."""
        c = self.c
        live = LiveSession(self.runtime.detector.params)
        _, timeline = self._pictures(live, self._detector(session))  # empty, with the thresholds drawn
        return {
            c.live_state: live,
            c.live_label: self._label(live_verdict(None)),
            c.live_timeline: timeline,
            c.live_status: self.runtime.live_seats.full_message() or live_status(live),
            c.live_alarms: live_alarms(live),
            c.live_summary: "",
            c.live_csv: gr.File(value=None, visible=False),
            c.live_worst: gr.File(value=None, visible=False),
        }

    def _chunks(self, chunk, request: gr.Request | None) -> list[tuple[int | None, np.ndarray | None]]:
        """The chunks to hear now, oldest first: the page's chunk file and any posted before it that gradio
        replaced while the server was busy (``anomaly.ui.streams``); a (rate, samples) chunk as it is."""
        if not isinstance(chunk, str | os.PathLike):
            return [chunk if chunk is not None else (None, None)]
        chunk_log = self.runtime.live_chunks
        paths = chunk_log.take(request.session_hash if request is not None else None, str(chunk))
        chunks = [read_chunk(path) for path in paths]
        chunk_log.forget(paths)
        return chunks

    def listen(
        self,
        chunk: str | tuple[int, np.ndarray] | None,
        live: LiveSession | None,
        session: Session | None,
        request: gr.Request | None = None,
    ) -> dict:
        """One chunk of the microphone stream (its file, or rate and samples); every new second of audio,
        the last 2 s are scored.

        Bad chunks (empty, silent, NaN, unreadable) never stop the stream: the verdict says what is wrong.
        """
        c = self.c
        if live is None or (live.stopped_at is not None and time.time() - live.stopped_at > 2.0):
            # start_recording did not arrive first, or this is a new take
            live = LiveSession(self.runtime.detector.params)
        if live.stopped_at is not None:
            return {c.live_state: live}  # a chunk that was on its way when Stop was pressed
        started = time.perf_counter()
        self.runtime.live_seats.seen(live)
        detector = self._detector(session)
        try:
            readings = []
            with self.runtime.priority.interactive():
                for sr, data in self._chunks(chunk, request):
                    readings += live.feed(data, sr, detector)
            if not readings:
                if live.last is None:  # before the first verdict, say how far it is (the page knows it is alive)
                    return {c.live_state: live, c.live_label: self._label(LISTENING), c.live_status: live_status(live)}
                return {c.live_state: live}
            out = {
                c.live_state: live,
                c.live_label: self._label(live_verdict(live.last)),
                c.live_alarms: live_alarms(live),
            }
            if any(r.score is not None for r in readings):
                gauge, timeline = self._pictures(live, detector)
                out |= {c.live_gauge: gauge if gauge is not None else gr.skip(), c.live_timeline: timeline}
        except Exception:  # a stream must survive anything one chunk does; the log keeps the traceback
            log.exception("unexpected error while listening")
            return {
                c.live_state: live,
                c.live_label: self._label(INTERNAL_ERROR),
                c.live_status: internal_message("listening"),
            }
        out[c.live_status] = live_status(live, (time.perf_counter() - started) * 1000.0)
        return out

    def stop(self, live: LiveSession | None, session: Session | None) -> dict:
        """Stop: time at each level, the worst moment, and downloads of the readings (CSV) and the worst 10 s."""
        c = self.c
        if live is None:
            return {c.live_summary: "Nothing was heard: press Record and allow the microphone."}
        live.stop()
        self.runtime.live_seats.left(live)
        shares = session_shares(live)
        headline, worst = session_headline(live), shares[0][0] if shares else None
        return {
            c.live_state: live,
            c.live_label: gr.Label(value=headline, color=verdict_colour(worst)),
            c.live_summary: live_summary(live),
            c.live_csv: gr.File(value=self._csv_file(live), visible=bool(live.log)),
            c.live_worst: gr.File(value=self._worst_file(live), visible=live.worst_clip is not None),
            c.live_status: f"Stopped after {live.heard_s:.0f} s of listening.",
        }

    def _csv_file(self, live: LiveSession) -> str | None:
        if not live.log:
            return None
        path = self.runtime.output_path("live-readings.csv")
        path.write_text(live.csv_text())
        return str(path)

    def _worst_file(self, live: LiveSession) -> str | None:
        if live.worst_clip is None:
            return None
        import soundfile as sf

        sr, clip = live.worst_clip
        path = self.runtime.output_path("worst-10s.wav")
        sf.write(path, np.clip(clip, -1.0, 1.0), sr, subtype="PCM_16")
        return str(path)
