"""anomaly/live.py: the live session fed chunks of every size, rate and kind, with the tiny bundle."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from anomaly.live import NO_SOUND, NO_SOUND_PROBLEM, LiveSession
from anomaly.scoring import LABELS, VERDICTS
from anomaly.synth import synthesize_clip
from anomaly.waveform import resample

SR = 16000


def _clip(label: str, seed: int, seconds: float, fault: str | None = None) -> np.ndarray:
    wave, _ = synthesize_clip("source", label, seed, fault=fault, severity=1.0, duration_s=seconds)
    return wave


def _feed(session, detector, audio: np.ndarray, sr: int, chunk_s: float) -> list:
    step = max(1, round(chunk_s * sr))
    readings = []
    for i in range(0, len(audio), step):
        readings += session.feed(audio[i : i + step], sr, detector)
    return readings


def _as_rate(audio16k: np.ndarray, sr: int, *, stereo: bool = False, int16: bool = False) -> np.ndarray:
    """The 16 kHz clip as a microphone at ``sr`` would deliver it (upsampled, perhaps stereo int16)."""
    y = resample(audio16k, SR, sr) if sr != SR else audio16k
    if stereo:
        y = np.stack([y, 0.9 * y], axis=1)
    if int16:
        y = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16)
    return y


@pytest.fixture(scope="module")
def normal_then_fault():
    """8 s of a normal gearbox, then 8 s of the same gearbox with a severe lubrication fault."""
    return np.concatenate([_clip("normal", 3, 8.0), _clip("anomaly", 3, 8.0, fault="lubrication")])


@pytest.mark.parametrize(
    ("sr", "chunk_s", "stereo", "int16"),
    [
        (16000, 0.3, False, False),
        (44100, 1.0, False, True),
        (48000, 1.7, True, True),
        (48000, 0.1, False, False),
    ],
)
def test_one_reading_per_new_second_whatever_the_chunks(
    tiny_detector, normal_then_fault, sr, chunk_s, stereo, int16
):
    session = LiveSession(tiny_detector.params)
    audio = _as_rate(normal_then_fault, sr, stereo=stereo, int16=int16)
    readings = _feed(session, tiny_detector, audio, sr, chunk_s)
    seconds = len(audio) / sr

    # The first reading once one window (plus its guards) is heard, then one per second of audio.
    assert readings[0].time_s == pytest.approx(session.window_s, abs=1e-3)
    assert len(readings) == int((seconds - session.window_s) // 1.0) + 1
    assert np.allclose(np.diff([r.time_s for r in readings]), 1.0, atol=1e-3)
    assert all(r.problem is None and r.score is not None for r in readings)
    assert session.heard_s == pytest.approx(seconds, abs=1e-3)

    # Scores follow the audio: all normal windows stay below every window well inside the fault.
    normal = [r.score for r in readings if r.time_s <= 8.0]
    faulty = [r.score for r in readings if r.time_s >= 8.0 + session.window_s]
    assert max(normal) < min(faulty)
    assert readings[-1].label != LABELS[0]
    assert all(r.label == LABELS[0] for r in readings if r.time_s <= 8.0)


def test_readings_match_the_file_path_for_a_16k_clip(tiny_detector):
    """A window scored live is the window a recording of the same sound gets (same frames, same score)."""
    clip = _clip("normal", 5, 6.0)
    session = LiveSession(tiny_detector.params)
    reading = session.feed(clip[: round(session.window_s * SR)], SR, tiny_detector)[0]
    params = tiny_detector.params
    first = (params.hop_length + params.n_fft // 2) // params.hop_length
    from anomaly.features import log_mel

    spec = log_mel(clip, params)[:, first : first + params.window_frames]
    assert reading.score == pytest.approx(tiny_detector.analyze_log_mel(spec, name="x").score, rel=1e-5)


def test_bad_chunks_never_raise_and_say_what_is_wrong(tiny_detector):
    session = LiveSession(tiny_detector.params)
    sound = _clip("normal", 4, 4.0)
    assert session.feed(None, SR, tiny_detector)[0].problem.startswith("No audio from the microphone")
    assert "empty" in session.feed(np.zeros(0, np.float32), SR, tiny_detector)[0].problem
    nan = sound[:4000].copy()
    nan[100] = np.nan
    assert "NaN" in session.feed(nan, SR, tiny_detector)[0].problem
    assert "sample rate" in session.feed(sound[:4000], 0, tiny_detector)[0].problem
    assert "full scale" in session.feed(sound[:4000] * 1e6, SR, tiny_detector)[0].problem
    assert session.heard_s == 0.0  # rejected chunks are not heard

    silent = session.feed(np.zeros(3 * SR, np.float32), SR, tiny_detector)
    assert silent and all(r.problem == NO_SOUND_PROBLEM and r.score is None for r in silent)
    assert session.seconds_at[NO_SOUND] == len(silent)
    # Sound again: the stream goes on scoring.
    after = session.feed(sound, SR, tiny_detector)
    assert after and after[-1].score is not None and after[-1].label in VERDICTS


def test_a_new_sample_rate_restarts_the_ring_and_keeps_the_history(tiny_detector):
    session = LiveSession(tiny_detector.params)
    clip = _clip("normal", 6, 5.0)
    first = _feed(session, tiny_detector, clip, SR, 0.5)
    second = _feed(session, tiny_detector, _as_rate(clip, 48000), 48000, 0.5)
    assert first and second
    assert second[0].time_s == pytest.approx(5.0 + session.window_s, abs=1e-3)
    assert len(session.history) == len(first) + len(second)


def test_history_alarms_summary_csv_and_worst_clip(tiny_detector, normal_then_fault):
    session = LiveSession(tiny_detector.params, history_s=5.0, log_s=8.0, max_alarms=2)
    readings = _feed(session, tiny_detector, normal_then_fault, SR, 0.25)
    session.stop()
    assert session.feed(normal_then_fault[:SR], SR, tiny_detector) == []  # stopped: no more chunks

    assert len(session.history) == 5 and len(session.log) == 8  # bounded, the latest kept
    starts, scores = session.timeline()
    assert len(starts) == len(scores) == 5
    assert np.allclose(starts + session.window_s, [r.time_s for r in readings[-5:]])

    # One alarm: the rise from NORMAL when the fault came in.
    assert [a.label for a in session.alarms][-1] != LABELS[0]
    assert 8.0 <= session.alarms[0].time_s <= 8.0 + session.window_s + 1.0
    assert sum(session.seconds_at.values()) == len(readings)

    worst = max(readings, key=lambda r: r.score)
    assert session.worst == worst
    sr, clip = session.worst_clip
    assert sr == SR and len(clip) == 10 * SR  # the worst 10 s, cut from the ring
    facts = session.summary()
    assert facts["worst"]["score"] == worst.score and facts["readings"] == 8

    rows = list(csv.DictReader(io.StringIO(session.csv_text())))
    assert len(rows) == 8 and rows[-1]["label"] == readings[-1].label
    assert float(rows[-1]["score"]) == pytest.approx(readings[-1].score, abs=1e-4)


def test_worst_clip_is_what_there_is_when_stopped_early(tiny_detector):
    session = LiveSession(tiny_detector.params)
    _feed(session, tiny_detector, _clip("normal", 7, 3.0), SR, 1.0)
    assert session.worst_clip is None  # waiting for the 5 s after the worst moment
    session.stop()
    sr, clip = session.worst_clip
    assert len(clip) == 3 * SR


def test_memory_is_bounded_whatever_the_listening_time(tiny_detector):
    session = LiveSession(tiny_detector.params, history_s=10.0, log_s=20.0)
    second = _clip("normal", 8, 1.0)
    session.feed(second, SR, tiny_detector)
    ring = session._ring  # fixed size, allocated by the first chunk
    for _ in range(40):
        session.feed(second, SR, tiny_detector)
    assert session._ring is ring and ring.nbytes <= 15 * SR * 4
    assert len(session.history) == 10 and len(session.log) == 20


def test_the_warm_up_pays_for_librosas_resampler_before_the_first_visitor(tiny_bundle):
    """Importing librosa's resampler compiles its numba kernels: 11 to 25 s in a fresh install, which four
    live listeners at 44.1 kHz once spent waiting for their first verdict. The app's warm-up must do it
    (checked in a new process, where nothing else has imported it yet)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from anomaly.detector import Detector\n"
        "from anomaly.ui.runtime import warm_up\n"
        f"detector = Detector.load({str(tiny_bundle)!r})\n"
        "before = 'librosa.core.audio' in sys.modules\n"
        "warm_up(detector)\n"
        "print(before, 'librosa.core.audio' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "True"], done.stdout
