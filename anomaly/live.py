"""Listening live: microphone chunks of any size and rate in, one reading of the last window every second out.

The browser sends whatever it has (a tenth of a second, one second, a stereo 48 kHz burst); ``LiveSession``
keeps the last few seconds in a fixed ring at the chunk's own rate and, each time the stream passes another
``hop_s`` of audio, scores the last model window with the active detector: the window is resampled with
``anomaly.features.resample`` and turned into a log-mel with ``log_mel`` together with a short guard of real
audio on both sides, so that its frames are the ones a continuous recording would give (no zero padding and
no resampler edge inside), then ``Detector.analyze_log_mel`` scores it. That is the same call for the
bundled model and for a user's calibration.

Memory is bounded whatever the listening time: the audio ring holds ``RING_SECONDS``, the timeline the last
``history_s``, the log for the CSV the last ``log_s``, the alarm list ``max_alarms`` entries, and the worst
moment's recording ``worst_clip_s``.

Examples
--------
>>> session = LiveSession(detector.params)                          # doctest: +SKIP
>>> readings = session.feed(chunk, 48000, detector)                 # doctest: +SKIP
>>> [(r.time_s, r.label) for r in readings]                         # doctest: +SKIP
[(2.14, 'NORMAL')]
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from anomaly.decoding import MAX_SAMPLE_RATE
from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams, log_mel
from anomaly.scoring import LABELS, UNFAMILIAR, VERDICTS
from anomaly.waveform import MAX_PEAK, SILENCE_RMS, resample

# Audio kept at the microphone's rate: enough for the worst 10 s recording and the window behind it.
RING_SECONDS = 14.0
# What the readings count as when the microphone gave nothing usable.
NO_SOUND = "no usable sound"
NO_SOUND_PROBLEM = "No sound from the microphone: is it muted, covered, or used by another program?"
LOWEST_SAMPLE_RATE = 8000


@dataclass(frozen=True)
class LiveReading:
    """One scoring of the last window, at ``time_s`` seconds of listening, or why there was none."""

    time_s: float
    score: float | None = None
    label: str | None = None
    familiar: bool = True
    problem: str | None = None

    @property
    def level(self) -> str:
        """The label, or ``NO_SOUND`` when nothing was scored."""
        return self.label if self.label is not None else NO_SOUND


@dataclass(frozen=True)
class Alarm:
    """The label rose (NORMAL -> NEEDS MAINTENANCE, or anything -> SEVERE ANOMALY) at ``time_s``."""

    time_s: float
    label: str
    score: float
    clock: str  # wall-clock time of day, for a person standing at the machine


@dataclass
class LiveSession:
    """A listening session: a ring of recent audio and a bounded history of readings.

    Parameters
    ----------
    params : the detector's ``FeatureParams`` (rate, FFT, hop and window length of the model).
    hop_s : a new reading every this many seconds of audio.
    history_s : readings kept for the rolling timeline.
    log_s : readings kept for the CSV (older ones are dropped, oldest first).
    worst_clip_s : length of the recording kept around the worst moment.
    max_alarms : alarms kept (the most recent).
    """

    params: FeatureParams
    hop_s: float = 1.0
    history_s: float = 60.0
    log_s: float = 3600.0
    worst_clip_s: float = 10.0
    max_alarms: int = 10
    started: float = field(default_factory=time.time)
    stopped_at: float | None = None
    # State below is set up in __post_init__ and by the first chunk.
    sr: int | None = field(default=None, init=False)
    heard_s: float = field(default=0.0, init=False)  # audio accepted, in seconds (the stream's clock)
    last: LiveReading | None = field(default=None, init=False)
    worst: LiveReading | None = field(default=None, init=False)
    worst_clip: tuple[int, np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.params
        # Guard of real audio on each side of the window, one hop long: the log-mel's frames near the ends
        # then see neither its zero padding nor the resampler's edge (its filter is ~20 ms long at 48 kHz).
        self._guard = p.hop_length
        self._frames = p.window_frames
        # Samples (at the model's rate) from the first frame's start to the last frame's end, plus guards.
        self._extent = (self._frames - 1) * p.hop_length + p.n_fft + 2 * self._guard
        self.window_s = self._extent / p.sr
        n_history = max(1, round(self.history_s / self.hop_s))
        self.history: deque[LiveReading] = deque(maxlen=n_history)
        self.log: deque[LiveReading] = deque(maxlen=max(n_history, round(self.log_s / self.hop_s)))
        self.alarms: deque[Alarm] = deque(maxlen=self.max_alarms)
        self.seconds_at: dict[str, float] = dict.fromkeys([*VERDICTS, NO_SOUND], 0.0)
        self._ring = np.zeros(0, dtype=np.float32)
        self._total = 0  # samples accepted at the current rate
        self._next = 0  # sample count at which the next reading is due
        self._pending_worst: int | None = None  # sample index of the worst window's centre, clip not cut yet
        self._last_label = LABELS[0]  # the last scored label: an alarm is a rise from it

    # --- the stream ---------------------------------------------------------------------------------------

    def feed(self, chunk: np.ndarray | None, sr: int | None, detector) -> list[LiveReading]:
        """Take one chunk (samples, or samples x channels; integer or float) at ``sr`` Hz and return the
        readings it completed: one per ``hop_s`` of audio passed, none for a short chunk, and a reading with
        a ``problem`` (and no score) for a chunk that cannot be used. Never raises on bad audio."""
        if self.stopped_at is not None:
            return []
        y, problem = self._mono(chunk, sr)
        if problem is not None:
            return [self._record(LiveReading(self.heard_s, problem=problem), count=False)]
        assert sr is not None and y is not None  # noqa: S101 - _mono said so
        if sr != self.sr:
            self._restart(int(sr))
        readings: list[LiveReading] = []
        while len(y):
            take = min(len(y), self._next - self._total)
            self._append(y[:take])
            y = y[take:]
            if self._total >= self._next:
                readings.append(self._record(self._read(detector)))
                self._next += max(1, round(self.hop_s * self.sr))
        return readings

    def stop(self) -> None:
        """End the session: no more chunks are taken; the worst clip is cut from what was heard."""
        if self.stopped_at is None:
            self._cut_worst(final=True)
            self.stopped_at = time.time()

    def _mono(self, chunk, sr) -> tuple[np.ndarray | None, str | None]:
        """The chunk as mono float32 in [-1, 1], or what is wrong with it."""
        if chunk is None:
            return None, "No audio from the microphone yet."
        data = np.asarray(chunk)
        if data.size == 0:
            return None, "No audio from the microphone: it sent an empty chunk."
        if not sr or not LOWEST_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
            return None, f"The microphone reports an unusable sample rate ({sr} Hz)."
        if data.ndim == 2 and data.shape[0] < data.shape[1] and data.shape[0] <= 8:
            data = data.T  # channels first
        if data.ndim not in (1, 2):
            return None, f"The microphone sent audio of an unexpected shape {data.shape}."
        if np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
        elif not np.issubdtype(data.dtype, np.floating):
            return None, f"The microphone sent {data.dtype} samples, not audio."
        data = data.astype(np.float32, copy=False)
        if not np.isfinite(data).all():
            return None, "The microphone sent damaged samples (NaN or infinite); that part was skipped."
        if np.abs(data).max() > MAX_PEAK:
            return None, "The microphone sent samples far beyond full scale; that part was skipped."
        y = data.mean(axis=1) if data.ndim == 2 else data
        return np.ascontiguousarray(y, dtype=np.float32), None

    def _restart(self, sr: int) -> None:
        """A new sample rate (first chunk, or another microphone): the ring starts again at it. The readings
        so far stay; the next one is due once a full window has been heard at the new rate."""
        self.sr = sr
        self._ring = np.zeros(math.ceil(RING_SECONDS * sr), dtype=np.float32)
        self._total = 0
        self._next = math.ceil(self._extent * sr / self.params.sr)
        self._pending_worst = None

    def _append(self, y: np.ndarray) -> None:
        n = len(y)
        if n >= len(self._ring):
            self._ring[:] = y[-len(self._ring) :]
        elif n:
            self._ring[:-n] = self._ring[n:]
            self._ring[-n:] = y
        self._total += n
        self.heard_s += n / self.sr
        if self._pending_worst is not None:
            self._cut_worst()

    def _read(self, detector) -> LiveReading:
        """Score the last window against ``detector`` (whatever it is now: model or calibration)."""
        p = self.params
        n_raw = min(self._total, len(self._ring), math.ceil(self._extent * self.sr / p.sr) + 2)
        raw = self._ring[-n_raw:]
        now = round(self.heard_s, 3)
        if float(np.sqrt(np.mean(np.square(raw, dtype=np.float64)))) < SILENCE_RMS:
            return LiveReading(now, problem=NO_SOUND_PROBLEM)
        y = resample(raw, self.sr, p.sr) if self.sr != p.sr else raw
        y = y[-self._extent :]
        first = (self._guard + p.n_fft // 2) // p.hop_length  # first frame clear of the guard
        spec = np.ascontiguousarray(log_mel(y, p)[:, first : first + self._frames])
        wave = y[first * p.hop_length : (first + self._frames) * p.hop_length]
        try:
            analysis = detector.analyze_sound(detector.as_sound(spec, wave), name="microphone")
        except AudioInputError as exc:  # e.g. a phone line's 8 kHz: too little of the band to score
            return LiveReading(now, problem=exc.problem[:1].upper() + exc.problem[1:] + ".")
        return LiveReading(now, score=float(analysis.score), label=analysis.label, familiar=analysis.familiar)

    # --- the record ---------------------------------------------------------------------------------------

    def _record(self, reading: LiveReading, *, count: bool = True) -> LiveReading:
        self.last = reading
        if not count:  # a rejected chunk: no audio time passed
            return reading
        self.history.append(reading)
        self.log.append(reading)
        self.seconds_at[reading.level] += self.hop_s
        if reading.score is None or reading.label == UNFAMILIAR:
            # Nothing scored, or a score against a reference this sound is unlike: neither an alarm nor the
            # worst moment of the machine.
            return reading
        if LABELS.index(reading.label) > LABELS.index(self._last_label):
            clock = time.strftime("%H:%M:%S", time.localtime())
            self.alarms.append(Alarm(reading.time_s, reading.label, reading.score, clock))
        self._last_label = reading.label
        if self.worst is None or reading.score > self.worst.score:
            self.worst = reading
            centre = self._total - round(self._extent / 2 * self.sr / self.params.sr)
            self._pending_worst = centre
            self._cut_worst()
        return reading

    def _cut_worst(self, *, final: bool = False) -> None:
        """Keep ``worst_clip_s`` of audio centred on the worst window, once the half after it is heard
        (or at ``stop``, with what there is)."""
        if self._pending_worst is None or self.sr is None:
            return
        half = round(self.worst_clip_s / 2 * self.sr)
        end_wanted = self._pending_worst + half
        if self._total < end_wanted and not final:
            return
        # Stopped before the half after it was heard: the last worst_clip_s, which still holds the moment.
        oldest = self._total - min(self._total, len(self._ring))
        start = max(oldest, min(end_wanted, self._total) - 2 * half)
        end = min(self._total, start + 2 * half)
        lo, hi = start - self._total, end - self._total
        clip = self._ring[len(self._ring) + lo : len(self._ring) + hi if hi < 0 else None]
        self.worst_clip = (self.sr, clip.copy())
        self._pending_worst = None

    # --- what the page shows ------------------------------------------------------------------------------

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """Start time and score of each scored window in the rolling history."""
        scored = [r for r in self.history if r.score is not None]
        starts = np.asarray([r.time_s - self.window_s for r in scored], dtype=np.float64)
        return starts, np.asarray([r.score for r in scored], dtype=np.float64)

    def timeline_familiar(self) -> np.ndarray:
        """For each window of ``timeline``: was its sound familiar (an unfamiliar reading's bar is grey)."""
        return np.asarray([r.familiar for r in self.history if r.score is not None], dtype=bool)

    def csv_text(self) -> str:
        """The log (up to ``log_s``): one row per reading, time in seconds of listening."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["time_s", "score", "label", "familiar", "problem"])
        for r in self.log:
            writer.writerow(
                [
                    f"{r.time_s:.2f}",
                    "" if r.score is None else f"{r.score:.4f}",
                    r.label or "",
                    "" if r.score is None else str(r.familiar).lower(),
                    r.problem or "",
                ]
            )
        return out.getvalue()

    def summary(self) -> dict:
        """Plain numbers for the stop summary: time at each level, the worst moment, the alarms."""
        return {
            "listened_s": round(self.heard_s, 1),
            "readings": len(self.log),
            "seconds_at": {k: v for k, v in self.seconds_at.items() if v > 0},
            "worst": None
            if self.worst is None
            else {"time_s": self.worst.time_s, "score": self.worst.score, "label": self.worst.label},
            "alarms": [(a.clock, a.time_s, a.label, a.score) for a in self.alarms],
        }
