"""app.py's Listen live handlers, called in process as gradio calls them, with the tiny bundle.

app.py loads its model when imported, so it is imported here once, with ``ANOMALY_BUNDLE`` pointing at the
tiny bundle and the environment put back afterwards.
"""

from __future__ import annotations

import csv
import importlib
import os
import sys

import numpy as np
import pytest
import soundfile as sf

from anomaly.features import resample
from anomaly.scoring import LABELS
from anomaly.synth import synthesize_clip

MIC_SR = 48000


@pytest.fixture(scope="module")
def app(tiny_bundle, tmp_path_factory):
    saved = dict(os.environ)
    os.environ["ANOMALY_BUNDLE"] = str(tiny_bundle)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples-cache"))
    try:
        sys.modules.pop("app", None)
        module = importlib.import_module("app")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield module
    sys.modules.pop("app", None)


def _mic_chunks(seconds_normal: float, seconds_fault: float, chunk_s: float) -> list[tuple[int, np.ndarray]]:
    """What gradio hands the stream handler: (rate, int16 samples) chunks of a 48 kHz microphone."""
    normal, _ = synthesize_clip("source", "normal", 3, duration_s=seconds_normal)
    faulty, _ = synthesize_clip(
        "source", "anomaly", 3, fault="lubrication", severity=1.0, duration_s=seconds_fault
    )
    wave = resample(np.concatenate([normal, faulty]), 16000, MIC_SR)
    pcm = np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)
    step = round(chunk_s * MIC_SR)
    return [(MIC_SR, pcm[i : i + step]) for i in range(0, len(pcm), step)]


def test_listen_updates_every_second_and_stop_gives_the_summary(app):
    start = app.listen_start(None)
    assert set(start) >= {app.live_state, app.live_label, app.live_timeline, app.live_summary_out}
    live = start[app.live_state]
    updates = []
    for chunk in _mic_chunks(6.0, 6.0, 0.1):  # gradio's microphone sends a tenth of a second at a time
        out = app.listen(chunk, live, None)
        assert out[app.live_state] is live
        if app.live_timeline in out:
            updates.append(out)
    assert len(updates) == len(live.history) == int(12.0 - live.window_s) + 1
    assert updates[0][app.live_label] == LABELS[0]
    assert updates[-1][app.live_label] != LABELS[0]
    gauge, timeline = updates[-1][app.live_gauge], updates[-1][app.live_timeline]
    assert gauge.ndim == 3 and timeline.ndim == 3
    assert "processed in" in updates[-1][app.live_status_out]
    assert (
        "SEVERE ANOMALY" in updates[-1][app.live_alarms_out]
        or "NEEDS MAINTENANCE" in updates[-1][app.live_alarms_out]
    )

    stop = app.listen_stop(live, None)
    summary = stop[app.live_summary_out]
    assert "Worst moment" in summary and LABELS[0] in summary
    with open(stop[app.live_csv_out].value["path"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(updates)
    worst, sr = sf.read(stop[app.live_worst_out].value["path"])
    assert sr == MIC_SR and 9.9 <= len(worst) / sr <= 10.0
    # A chunk still on its way when Stop was pressed changes nothing.
    assert app.listen(_mic_chunks(1.0, 1.0, 1.0)[0], live, None) == {app.live_state: live}


def test_bad_chunks_keep_the_stream_alive_and_say_what_is_wrong(app):
    live = app.listen_start(None)[app.live_state]
    out = app.listen(None, live, None)
    assert out[app.live_label] == "No audio from the microphone yet"
    nan = np.full(4800, np.nan, dtype=np.float32)
    assert "damaged samples" in app.listen((MIC_SR, nan), live, None)[app.live_status_out]
    silence = np.zeros(MIC_SR // 2, dtype=np.int16)
    labels = [app.listen((MIC_SR, silence), live, None).get(app.live_label) for _ in range(8)]
    assert "No sound from the microphone" in labels
    assert app.listen((MIC_SR, np.zeros(0, np.int16)), live, None)[app.live_label].startswith("No audio")
