"""Whose fault it was (``anomaly.ui.serving.caught``): the app of tests/test_ui.py, served over HTTP.

A bad file is the visitor's to fix: one message naming it and the problem. A bug of ours is injected here by
making one engine call raise what a bug raises; the visitor is told it went wrong on our side (never to try
another file), the log keeps its traceback, and the app goes on serving.
"""

from __future__ import annotations

import logging
import socket

import gradio as gr
import pytest
import soundfile as sf

from anomaly.detector import Detector
from anomaly.scoring import LABELS
from anomaly.synth import synthesize_clip
from anomaly.ui.session import stored_calibration

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

OUR_SIDE = "Something went wrong on our side"
BUG = "index 7 is out of bounds for axis 0 with size 7"  # an IndexError: what a slip in our array code raises


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(app_module):
    return app_module


@pytest.fixture(scope="module")
def client(app):
    """The in-process app (so that a test can break one engine call) on a loopback port, as gradio serves it."""
    app.demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(app.demo.local_url, verbose=False, download_files=False)
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    wave, _ = synthesize_clip("source", "anomaly", 3, fault="tooth", severity=1.0)
    path = tmp_path_factory.mktemp("serving") / "gearbox.wav"
    sf.write(path, wave, 16000, subtype="PCM_16")
    return path


def fail_once(monkeypatch, name: str) -> None:
    """``Detector.<name>`` raises ``IndexError(BUG)`` the next time it is called, then works again."""
    real = getattr(Detector, name)
    calls = []

    def faulty(self, *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise IndexError(BUG)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, name, faulty)


def logged_bug(caplog) -> logging.LogRecord:
    """The one error record with the injected exception's traceback."""
    records = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info and str(r.exc_info[1]) == BUG]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    assert "Traceback" in caplog.text and "IndexError: index 7 is out of bounds" in caplog.text
    return records[0]


def says_it_was_us(text: str, doing: str) -> None:
    assert f"{OUR_SIDE} while {doing}" in text
    assert "another file" not in text and "Cannot use this file" not in text
    assert "index 7" not in text and "IndexError" not in text  # the details are for the log


def test_a_bug_while_scoring_is_ours_over_http_and_the_next_call_works(app, client, clip, monkeypatch, caplog):
    fail_once(monkeypatch, "analyze")
    with pytest.raises(AppError) as failed:
        client.predict(handle_file(str(clip)), api_name="/score")
    says_it_was_us(str(failed.value), "scoring the recording")
    assert logged_bug(caplog).getMessage() == "unexpected error while scoring the recording"
    scored = client.predict(handle_file(str(clip)), api_name="/score")
    assert scored["file"] == "gearbox.wav" and scored["label"] in LABELS


def test_a_bad_file_is_the_visitors_and_logs_no_traceback(client, tmp_path, caplog):
    notes = tmp_path / "notes.wav"
    notes.write_text("meeting notes, not a recording\n")
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(notes)), api_name="/score")
    assert "notes.wav: not a readable audio file" in str(refused.value)
    assert OUR_SIDE not in str(refused.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_bug_in_a_batch_is_ours_not_a_row_of_bad_files(app, client, clip, monkeypatch, caplog):
    fail_once(monkeypatch, "analyze_many")
    with pytest.raises(AppError) as failed:
        client.predict([handle_file(str(clip))], api_name="/batch")
    says_it_was_us(str(failed.value), "scoring the batch")
    logged_bug(caplog)
    # The page's Score all button, called as gradio calls it: the same sentence in the status line.
    fail_once(monkeypatch, "analyze_many")
    shown = app.page.show_batch([str(clip)], None, lambda *a, **k: None)
    says_it_was_us(shown[app.c.batch_status], "scoring the batch")
    assert shown[app.c.batch_table] is None


def test_the_page_shows_a_bug_as_ours_in_place_of_the_result(app, clip, monkeypatch, caplog):
    c = app.c
    fail_once(monkeypatch, "analyze")
    out = app.page.show_analysis(str(clip), True, None)
    assert out[c.label].value["label"] == "Internal error"
    says_it_was_us(out[c.compared], "analysing the recording")
    says_it_was_us(out[c.details], "analysing the recording")
    assert out[c.last] is None and out[c.spectrogram] is None
    logged_bug(caplog)


def test_a_bug_while_restoring_keeps_the_browsers_calibration(app, tiny_calibration, monkeypatch, caplog):
    """Dropping what the browser kept is for a calibration that cannot be used, not for our own failure."""
    c, detector = app.c, app.runtime.detector
    stored = stored_calibration(
        tiny_calibration, detector.load_calibration(tiny_calibration), detector, app.runtime.store_secret
    )
    fail_once(monkeypatch, "load_calibration")
    out = app.page.restore(stored, True)
    assert c.stored not in out and c.session not in out  # the browser keeps it; the session is left alone
    says_it_was_us(out[c.calibration_status], "restoring your calibration")
    logged_bug(caplog)
    restored = app.page.restore(stored, True)  # the next page load uses it
    assert restored[c.session].calibration.meta["name"] == "Pump 3" and restored[c.stored] == gr.skip()


def test_a_bug_while_listening_is_ours_and_the_stream_goes_on(app, monkeypatch, caplog):
    import numpy as np

    from anomaly.live import LiveSession

    c, live_page = app.c, app.live
    live = live_page.start(None)[c.live_state]
    real, calls = LiveSession.feed, []

    def faulty(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IndexError(BUG)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LiveSession, "feed", faulty)
    chunk = (48000, np.zeros(4800, dtype=np.int16))
    out = live_page.listen(chunk, live, None)
    assert out[c.live_label].value["label"] == "Internal error" and out[c.live_state] is live
    says_it_was_us(out[c.live_status], "listening")
    logged_bug(caplog)
    assert live_page.listen(chunk, live, None)[c.live_state] is live  # the next chunk is heard
    assert len(calls) == 2
