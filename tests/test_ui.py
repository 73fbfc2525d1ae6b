"""The page's handlers (``anomaly.ui``), called in process as gradio calls them, with the tiny bundle.

``app`` is ``app.py`` imported once with ``ANOMALY_BUNDLE`` pointing at the tiny bundle (tests/conftest.py):
its ``demo`` holds the wiring, ``page`` and ``live`` the handlers, ``c`` the components. Every call goes
through ``call``, which also checks that the handler's dict names only components its event writes to.
"""

from __future__ import annotations

import ast
import csv
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from anomaly.plots import LABEL_COLOURS, MUTED
from anomaly.scoring import LABELS
from anomaly.spectrogram_plot import spectrogram_picture
from anomaly.synth import synthesize_clip
from anomaly.ui.views import UNFAMILIAR_VERDICT
from anomaly.waveform import resample

ROOT = Path(__file__).resolve().parent.parent
MIC_SR = 48000


def wired_outputs(demo: gr.Blocks, handler) -> list[set]:
    """The output components of every event that runs ``handler``."""
    return [
        {block._id for block in fn.outputs}
        for fn in demo.fns.values()
        if getattr(fn.fn, "__func__", fn.fn) is getattr(handler, "__func__", handler)
    ]


def assert_wired(demo: gr.Blocks, handler, out: object) -> None:
    """``out`` is a dict that names only components which every event running ``handler`` writes to."""
    wirings = wired_outputs(demo, handler)
    assert wirings, f"{handler.__name__} is not wired to any event"
    assert isinstance(out, dict), f"{handler.__name__} returned {type(out).__name__}, not a dict by component"
    assert out, f"{handler.__name__} returned an empty dict, which gradio reads as one missing value"
    for outputs in wirings:
        stray = [k for k in out if k._id not in outputs]
        assert not stray, f"{handler.__name__} writes to components its event does not list: {stray}"


def call(app, handler, *args):
    """Call a handler as gradio would and check its answer against its wiring."""
    out = handler(*args)
    assert_wired(app.demo, handler, out)
    return out


def label_of(value) -> str | None:
    return value.value["label"] if isinstance(value, gr.Label) and value.value else value


@pytest.fixture(scope="module")
def app(app_module):
    return app_module


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ui-clips")
    paths = {}
    for name, kind, fault, seed in [
        ("normal", "normal", None, 7),
        ("fault", "anomaly", "tooth", 7),
    ]:
        wave, _ = synthesize_clip("source", kind, seed, fault=fault, severity=1.0 if fault else None)
        paths[name] = out / f"{name}.wav"
        sf.write(paths[name], wave, 16000, subtype="PCM_16")
    for i in range(4):
        wave, _ = synthesize_clip("target", "normal", 40 + i)
        paths[f"mine{i}"] = out / f"my_machine_{i}.wav"
        sf.write(paths[f"mine{i}"], wave, 16000, subtype="PCM_16")
    (out / "notes.txt").write_text("not a recording")
    paths["text"] = out / "notes.txt"
    return paths


def test_the_ui_package_imports_without_a_model_or_app(tmp_path):
    code = (
        "import sys; import anomaly.ui.handlers, anomaly.ui.live, anomaly.ui.views, anomaly.ui.session, "
        "anomaly.ui.serving, anomaly.ui.runtime; "
        "loaded = [m for m in ('app', 'keras', 'tensorflow') if m in sys.modules]; print(loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    for source in (ROOT / "anomaly" / "ui").glob("*.py"):
        tree = ast.parse(source.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "app" not in imported, f"{source.name} imports app.py"


def test_app_py_is_thin(app):
    assert len((ROOT / "app.py").read_text().splitlines()) <= 400


def test_the_wiring_check_fails_on_a_handler_writing_elsewhere(app):
    """/analyze is wired to the five API outputs: writing the verdict card's line too would be caught."""
    c = app.c
    assert_wired(app.demo, app.page.analyze, {c.label: "NORMAL"})
    with pytest.raises(AssertionError, match="does not list"):
        assert_wired(app.demo, app.page.analyze, {c.label: "NORMAL", c.compared: "the demo gearbox"})
    with pytest.raises(AssertionError, match="not wired"):
        assert_wired(app.demo, lambda: {}, {})
    with pytest.raises(AssertionError, match="not a dict"):
        assert_wired(app.demo, app.page.analyze, ("NORMAL",))
    with pytest.raises(AssertionError, match="empty dict"):
        assert_wired(app.demo, app.page.analyze, {})


def test_analyze_shows_the_verdict_with_what_it_compared_with(app, clips):
    out = call(app, app.page.show_analysis, str(clips["fault"]), True, None)
    c = app.c
    assert label_of(out[c.label]) in LABELS
    assert out[c.label].color != MUTED
    assert "demo gearbox" in out[c.compared]
    assert out[c.spectrogram].ndim == 3 and out[c.timeline].ndim == 3
    assert 'class="gauge' in out[c.gauge] and "about 1 is what a normal recording" in out[c.gauge]
    assert "fault.wav" in out[c.details]
    assert out[c.last].file == "fault.wav"
    api = call(app, app.page.analyze, str(clips["fault"]), True, None)
    assert set(api) == set(app.page.api_view)
    assert label_of(api[c.label]) == label_of(out[c.label])


def test_an_error_replaces_every_old_result(app, clips):
    c = app.c
    started = call(app, app.page.start_analysis, str(clips["text"]))
    assert started[c.spectrogram] is None and started[c.timeline] is None and started[c.last] is None
    assert label_of(started[c.label]) == "Analysing notes.txt…"
    out = call(app, app.page.show_analysis, str(clips["text"]), True, None)
    assert out[c.spectrogram] is None and out[c.gauge] == "" and out[c.last] is None
    assert label_of(out[c.label]) == "Cannot use this file"
    assert "notes.txt" in out[c.details] and str(clips["text"].parent) not in out[c.details]
    assert out[c.label].color == MUTED and "notes.txt: not a readable audio file" in out[c.compared]
    empty = call(app, app.page.show_analysis, None, True, None)
    assert "Upload or record" in empty[c.details]
    with pytest.raises(gr.Error, match="notes.txt"):
        app.page.analyze(str(clips["text"]), True, None)


def test_example_and_its_refresh(app, clips):
    c = app.c
    shown = app.page.example(
        str(clips["normal"])
    )  # gradio wraps it for caching: its outputs are the Examples'
    assert {k._id for k in shown} == {o._id for o in app.examples.outputs}
    refreshed = call(app, app.page.refresh_after_example, str(clips["normal"]), True, None)
    assert refreshed[c.last].file == "normal.wav" and c.spectrogram not in refreshed
    redrawn = call(app, app.page.redraw_spectrogram, False, refreshed[c.last])
    assert redrawn[c.spectrogram].ndim == 3
    nothing = call(app, app.page.redraw_spectrogram, True, None)
    assert list(nothing.values()) == [gr.skip()]
    assert list(call(app, app.page.restore, None, True).values()) == [gr.skip()]
    assert list(call(app, app.page.refresh_after_example, None, True, None).values()) == [gr.skip()]
    assert call(app, app.page.go_to_adapt)[c.tabs].selected == "adapt"


def test_batch_table_csv_trend_and_errors_in_place(app, clips):
    c = app.c
    files = [str(clips["normal"]), str(clips["text"]), str(clips["fault"])]
    out = call(app, app.page.show_batch, files, None)
    table = out[c.batch_table]
    assert list(table["file"]) == ["normal.wav", "notes.txt", "fault.wav"]
    assert "not a readable audio file" in table["error"][1] and table["score"][1] is None
    with open(out[c.batch_csv], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["model"] == "local bundle " + Path(app.runtime.detector.bundle.path).name + "/"
    assert rows[0]["calibration"] == "" and "demo gearbox" in rows[0]["compared_with"]
    assert out[c.batch_trend].count("<title>") >= 3 and "notes.txt" in out[c.batch_trend]
    assert "3 file(s)" in out[c.batch_status]
    assert out[c.batch_rows].count("<tr>") == 4 and "notes.txt" in out[c.batch_rows]
    assert "not a readable audio file" in out[c.batch_rows] and 'class="batch-label"' in out[c.batch_rows]
    none = call(app, app.page.show_batch, None, None)
    assert (
        none[c.batch_table] is None
        and none[c.batch_rows] == ""
        and "Choose one or more" in none[c.batch_status]
    )
    api = call(app, app.page.batch, files, None)
    assert set(api) == {c.batch_table, c.batch_csv}


def test_adapt_name_banner_thresholds_and_a_reload_that_keeps_it(app, clips):
    c, page = app.c, app.page
    analysed = call(app, page.show_analysis, str(clips["mine0"]), True, None)
    last = analysed[c.last]
    mine = [str(clips[f"mine{i}"]) for i in range(4)]
    out = call(app, page.calibrate, mine, "Pump 3, east hall", True, None, last)
    session = out[c.session]
    assert session.calibration.meta["name"] == "Pump 3, east hall"
    assert "Pump 3, east hall" in out[c.banner] and "4 normal recordings" in out[c.banner]
    assert "Pump 3, east hall" in out[c.compared]
    assert out[c.last].compared_with.startswith("Pump 3, east hall")
    stored = out[c.stored]
    assert (
        stored["encoder_sha256"] == app.runtime.detector.bundle.encoder_sha256
        and stored["name"] == "Pump 3, east hall"
    )

    # A reload: a new session whose browser kept the calibration.
    restored = call(app, page.restore, stored, True)
    assert restored[c.session].calibration.thresholds == session.calibration.thresholds
    assert "Pump 3, east hall" in restored[c.banner]
    # Damaged or from another model: dropped with a sentence, never used.
    tampered = dict(stored, sha256="0" * 64)
    dropped = call(app, page.restore, tampered, True)
    assert dropped[c.stored] is None and "damaged" in dropped[c.calibration_status]
    other = call(app, page.restore, dict(stored, encoder_sha256="f" * 64), True)
    assert "another model" in other[c.calibration_status]

    # Thresholds by hand, a refusal, then reset.
    t = session.calibration.thresholds
    moved = call(app, page.set_thresholds, 0.01, t.severe, True, session, out[c.last])
    assert moved[c.session].manual == (0.01, t.severe) and "set by hand" in moved[c.adapt_text]
    refused = call(app, page.set_thresholds, 3.0, 2.0, True, session, None)
    assert "must be below" in refused[c.adapt_text]
    reset = call(app, page.reset_thresholds, True, moved[c.session], out[c.last])
    assert reset[c.session].manual is None and reset[c.maintenance].value == round(t.maintenance, 2)

    # The file round trip, under a new name, then forgetting.
    loaded = call(app, page.load_calibration_file, out[c.calibration_file], "Fan 2", True, None, None)
    assert loaded[c.session].calibration.meta["name"] == "Fan 2" and "Fan 2" in loaded[c.banner]
    forgot = call(app, page.forget_calibration, True, loaded[c.session], out[c.last])
    assert forgot[c.session].calibration is None and forgot[c.banner] == "" and forgot[c.stored] is None


def test_adapting_refuses_too_few_or_unreadable_recordings_in_place(app, clips):
    c = app.c
    none = call(app, app.page.calibrate, None, "", True, None, None)
    assert "at least" in none[c.calibration_status]
    bad = call(app, app.page.calibrate, [str(clips["text"]), str(clips["mine0"])], "", True, None, None)
    assert bad[c.calibration_status].startswith("⚠️ **Cannot adapt")
    garbage = call(app, app.page.load_calibration_file, str(clips["text"]), "", True, None, None)
    assert "notes.txt" in garbage[c.calibration_status] and c.session not in garbage
    # A cleared box or a slider emptied by hand changes nothing.
    assert list(call(app, app.page.load_calibration_file, None, "", True, None, None).values()) == [gr.skip()]
    assert list(call(app, app.page.set_thresholds, None, 1.0, True, None, None).values()) == [gr.skip()]


def test_thresholds_by_hand_decide_the_whole_verdict_again(app, clips):
    """Sliders that move the thresholds far below a fault's score give the verdict the detector gives with
    those thresholds: on main 030806a the page relabelled the last result SEVERE ANOMALY while the detector,
    with the same thresholds, called the recording unfamiliar."""
    c, page = app.c, app.page
    analysed = call(app, page.show_analysis, str(clips["fault"]), True, None)
    last = analysed[c.last]
    assert last.familiar
    maintenance, severe = last.score / 20, last.score / 10
    moved = call(app, page.set_thresholds, maintenance, severe, True, None, last)
    direct = app.runtime.detector.with_thresholds(maintenance, severe).analyze(clips["fault"])
    shown = moved[c.last]
    assert (shown.familiar, shown.label, shown.advice) == (direct.familiar, direct.label, direct.advice)
    assert shown.percentile == pytest.approx(direct.percentile)
    assert (shown.label, shown.thresholds.severe) == ("SEVERE ANOMALY", pytest.approx(severe))
    assert label_of(moved[c.label]) == "SEVERE ANOMALY"
    reset = call(app, page.reset_thresholds, True, moved[c.session], shown)
    assert reset[c.last].label == last.label


def test_an_unfamiliar_clip_gets_the_neutral_verdict_and_the_adapt_button(app, tmp_path):
    """A clip far from the training sounds (band-limited noise, much louder): familiar is false."""
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.5, 16000 * 4)
    path = tmp_path / "strange_machine.wav"
    sf.write(path, np.clip(noise, -1, 1), 16000, subtype="PCM_16")
    out = call(app, app.page.show_analysis, str(path), True, None)
    c = app.c
    analysis = out[c.last]
    if analysis.familiar:
        pytest.fail(f"expected white noise to be unfamiliar to the tiny model (score {analysis.score:.2f})")
    assert label_of(out[c.label]) == UNFAMILIAR_VERDICT and out[c.label].color == MUTED
    assert out[c.adapt_first].visible is True
    assert analysis.advice in out[c.compared]
    # Neutral pictures: no severity's colour in the gauge, no cyan departures over the spectrogram.
    assert 'class="gauge gauge-neutral"' in out[c.gauge]
    assert not any(colour in out[c.gauge] for colour in LABEL_COLOURS.values())
    assert analysis.anomaly_map is not None and float(np.abs(analysis.anomaly_map).max()) > 0
    plain = spectrogram_picture(analysis.log_mel, app.runtime.detector.params, None)
    assert np.array_equal(out[c.spectrogram], plain)


def test_an_8_khz_wav_is_told_to_record_again_not_to_upload_a_wav(app, tmp_path):
    """The refusal of a low sample rate named the cure "upload WAV or FLAC" to someone whose WAV it was."""
    import librosa

    wave, _ = synthesize_clip("source", "normal", 32)
    path = tmp_path / "phone_line.wav"
    sf.write(path, librosa.resample(wave, orig_sr=16000, target_sr=8000, res_type="fft"), 8000, subtype="PCM_16")
    out = call(app, app.page.show_analysis, str(path), True, None)
    message = out[app.c.details]
    assert "phone_line.wav" in message and "record again at 16 kHz or more" in message
    assert "upload WAV" not in message


# --- Listen live ---------------------------------------------------------------------------------------------


def _mic_chunks(
    seconds_normal: float, seconds_fault: float, chunk_s: float, *, fault_first: bool = False
) -> list[tuple[int, np.ndarray]]:
    """What gradio hands the stream handler: (rate, int16 samples) chunks of a 48 kHz microphone."""
    normal, _ = synthesize_clip("source", "normal", 3, duration_s=seconds_normal)
    faulty, _ = synthesize_clip(
        "source", "anomaly", 3, fault="lubrication", severity=1.0, duration_s=seconds_fault
    )
    wave = resample(np.concatenate([faulty, normal] if fault_first else [normal, faulty]), 16000, MIC_SR)
    pcm = np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)
    step = round(chunk_s * MIC_SR)
    return [(MIC_SR, pcm[i : i + step]) for i in range(0, len(pcm), step)]


def test_listen_updates_every_second_and_stop_gives_the_summary(app):
    c, live_page = app.c, app.live
    start = call(app, live_page.start, None)
    assert set(start) >= {c.live_state, c.live_label, c.live_timeline, c.live_summary}
    live = start[c.live_state]
    updates = []
    for chunk in _mic_chunks(6.0, 6.0, 0.1):  # gradio's microphone sends a tenth of a second at a time
        out = call(app, live_page.listen, chunk, live, None)
        assert out[c.live_state] is live
        if c.live_timeline in out:
            updates.append(out)
    assert len(updates) == len(live.history) == int(12.0 - live.window_s) + 1
    assert label_of(updates[0][c.live_label]) == LABELS[0]
    assert label_of(updates[-1][c.live_label]) != LABELS[0]
    gauge, timeline = updates[-1][c.live_gauge], updates[-1][c.live_timeline]
    assert 'class="gauge' in gauge and timeline.ndim == 3
    assert "processed in" in updates[-1][c.live_status]
    assert "SEVERE ANOMALY" in updates[-1][c.live_alarms] or "NEEDS MAINTENANCE" in updates[-1][c.live_alarms]

    stop = call(app, live_page.stop, live, None)
    summary = stop[c.live_summary]
    assert "Worst moment" in summary and LABELS[0] in summary
    worst = next(level for level in (LABELS[2], LABELS[1]) if live.seconds_at[level])
    assert label_of(stop[c.live_label]).startswith(worst) and f"Worst level heard: {worst}" in summary
    with open(stop[c.live_csv].value["path"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(updates)
    worst, sr = sf.read(stop[c.live_worst].value["path"])
    assert sr == MIC_SR and 9.9 <= len(worst) / sr <= 10.0
    # A chunk still on its way when Stop was pressed changes nothing.
    assert live_page.listen(_mic_chunks(1.0, 1.0, 1.0)[0], live, None) == {c.live_state: live}


def _browser_wav(path: Path, sr: int, pcm: np.ndarray) -> str:
    """A chunk as the page's recorder writes it: a WAV header that says "unknown length" (0xFFFFFFF7)."""
    import struct

    header = b"RIFF" + struct.pack("<I", 0xFFFFFFF7) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    path.write_bytes(header + b"data" + struct.pack("<I", 0xFFFFFFD3) + pcm.astype("<i2").tobytes())
    return str(path)


def test_a_busy_server_hears_every_chunk_posted_while_it_worked(app, tmp_path, monkeypatch):
    """gradio hands a stream's handler only the last chunk posted; the tap notes every one, and the handler
    hears them all, in order, then deletes their files. Here the handler runs for one chunk in seven."""
    from types import SimpleNamespace

    from anomaly.ui import streams

    c, live_page = app.c, app.live
    folder = tmp_path / "uploads"
    monkeypatch.setattr(app.runtime, "live_chunks", streams.ChunkLog(folder))
    monkeypatch.setattr(streams, "HEARD_LIFE_S", 0.0)
    request = SimpleNamespace(session_hash="visitor-1")
    live = call(app, live_page.start, None)[c.live_state]
    paths, updates = [], []
    for i, (sr, pcm) in enumerate(_mic_chunks(6.0, 6.0, 0.1)):
        (folder / f"{i:04d}").mkdir(parents=True)
        paths.append(_browser_wav(folder / f"{i:04d}" / "audio.wav", sr, pcm))
        app.runtime.live_chunks.note(request.session_hash, paths[-1])
        if i % 7 == 6:
            out = call(app, live_page.listen, paths[-1], live, None, request)
            updates += [out] if c.live_timeline in out else []
    heard = len(paths) - len(paths) % 7
    assert live.heard_s == pytest.approx(0.1 * heard, abs=1e-6)
    assert not any(Path(p).exists() for p in paths[: heard - 7]), "heard chunks are deleted"
    assert all(Path(p).exists() for p in paths[heard:]), "chunks not heard yet are kept"
    call(app, live_page.listen, paths[-1], live, None, request)  # the rest
    call(app, live_page.listen, paths[-1], live, None, request)  # the same chunk again: heard once
    assert live.heard_s == pytest.approx(12.0, abs=1e-6)
    assert len(live.history) == int(live.heard_s - live.window_s) + 1
    assert label_of(updates[0][c.live_label]) == LABELS[0] and label_of(updates[-1][c.live_label]) != LABELS[0]


def test_stop_after_a_fault_that_passed_says_the_fault_not_the_last_reading(app):
    """A session that ends NORMAL after a fault: the headline after Stop names the worst level and its share
    of the time, not the last reading."""
    c, live_page = app.c, app.live
    live = call(app, live_page.start, None)[c.live_state]
    for chunk in _mic_chunks(8.0, 5.0, 0.5, fault_first=True):
        call(app, live_page.listen, chunk, live, None)
    assert live.last.label == LABELS[0], "the session should end on a normal reading"
    worst = next((level for level in (LABELS[2], LABELS[1]) if live.seconds_at[level]), None)
    assert worst is not None, "the fault should have been heard"
    stop = call(app, live_page.stop, live, None)
    headline = label_of(stop[c.live_label])
    share = 100 * live.seconds_at[worst] / sum(live.seconds_at.values())
    assert headline == f"{worst} {share:.0f} % of the time"
    assert stop[c.live_label].color == LABEL_COLOURS[worst]
    assert f"**Worst level heard: {worst}**, {share:.0f} % of the time (" in stop[c.live_summary]


def test_before_the_first_verdict_the_page_says_how_much_has_been_heard(app):
    """The first verdict needs a full window of sound: until then every chunk says how far it is, so the
    page never sits at "Waiting" while sound arrives; Stop before it says exactly why nothing was scored."""
    c, live_page = app.c, app.live
    live = call(app, live_page.start, None)[c.live_state]
    chunks = _mic_chunks(1.0, 0.5, 0.5)[:2]  # 1 s: half the first window
    statuses = [call(app, live_page.listen, chunk, live, None)[c.live_status] for chunk in chunks]
    assert statuses == [
        f"Listening: {0.5 * (i + 1):.1f} s heard; the first verdict comes once {live.window_s:.1f} s have been heard."
        for i in range(len(chunks))
    ]
    summary = call(app, live_page.stop, live, None)[c.live_summary]
    assert f"only {live.heard_s:.2f} s of sound arrived, and the first verdict needs {live.window_s:.2f} s" in summary


def test_bad_chunks_keep_the_stream_alive_and_say_what_is_wrong(app):
    c, live_page = app.c, app.live
    live = live_page.start(None)[c.live_state]
    out = call(app, live_page.listen, None, live, None)
    assert label_of(out[c.live_label]) == "No audio from the microphone yet"
    nan = np.full(4800, np.nan, dtype=np.float32)
    assert "damaged samples" in live_page.listen((MIC_SR, nan), live, None)[c.live_status]
    silence = np.zeros(MIC_SR // 2, dtype=np.int16)
    labels = [label_of(live_page.listen((MIC_SR, silence), live, None).get(c.live_label)) for _ in range(8)]
    assert "No sound from the microphone" in labels
    assert label_of(live_page.listen((MIC_SR, np.zeros(0, np.int16)), live, None)[c.live_label]).startswith(
        "No audio"
    )


def _stored_with_file(stored: dict, data: bytes) -> dict:
    """A browser entry whose file is ``data``, with a checksum that matches (as a forger would write it)."""
    import base64
    import hashlib

    return dict(stored, file=base64.b64encode(data).decode("ascii"), sha256=hashlib.sha256(data).hexdigest())


def test_a_calibration_forged_in_browser_storage_is_refused(app, clips, hostile_calibration, tmp_path):
    """A forger knows all that gradio sends (the store's public key, the entry's layout): a calibration with
    lenient thresholds, a correct checksum, even a signature under gradio's key, is dropped with a sentence."""
    from anomaly.ui.session import _signature, storage_secret

    c, page = app.c, app.page
    mine = [str(clips[f"mine{i}"]) for i in range(4)]
    out = call(app, page.calibrate, mine, "Pump 3", True, None, None)
    stored = out[c.stored]
    assert call(app, page.restore, stored, True)[c.session].calibration.meta["name"] == "Pump 3"

    lenient = hostile_calibration(
        Path(out[c.calibration_file]), tmp_path / "lenient.npz", meta={"thresholds": {"maintenance": 900.0, "severe": 999.0}}
    )
    forged = _stored_with_file(stored, lenient.read_bytes())
    public = storage_secret(app.runtime.detector).encode()
    for entry in (forged, {**forged, "signature": _signature(forged, public)}, {**forged, "signature": None}):
        dropped = call(app, page.restore, entry, True)
        assert dropped[c.stored] is None and c.session not in dropped
        assert dropped[c.calibration_status] == (
            "⚠️ The calibration kept in this browser was dropped: the calibration kept in this browser was altered "
            "or damaged (this server did not sign it as it is); calibrate again"
        )
    # The server's secret stays on the server: kept owner-only in the app's data folder, never sent.
    assert app.runtime.store_secret not in str(app.demo.config).encode()
    key = Path(os.environ["GEARBOX_DATA_DIR"]) / "browser-store.key"
    assert key.read_bytes().strip() == app.runtime.store_secret and key.stat().st_mode & 0o777 == 0o600


def test_a_signed_entry_is_still_validated(app, clips, tiny_calibration, hostile_calibration, tmp_path):
    """Even an entry this server signed is read like any calibration file: impossible values are dropped."""
    from anomaly.ui.session import _signature

    c, page = app.c, app.page
    mine = [str(clips[f"mine{i}"]) for i in range(4)]
    stored = call(app, page.calibrate, mine, "Pump 3", True, None, None)[c.stored]
    out = call(app, page.calibrate, mine, None, True, None, None)
    with np.load(out[c.calibration_file]) as data:
        scale = next(k for k in data.files if k.endswith("scale"))
        zeros = np.zeros_like(data[scale])
    damaged = hostile_calibration(Path(out[c.calibration_file]), tmp_path / "zero.npz", **{scale: zeros})
    entry = _stored_with_file(stored, damaged.read_bytes())
    entry["signature"] = _signature(entry, app.runtime.store_secret)
    dropped = call(app, page.restore, entry, True)
    assert dropped[c.stored] is None and f"{scale} holds zero or negative scales" in dropped[c.calibration_status]


def test_hostile_calibration_files_get_one_message_and_names_show_as_text(app, hostile_calibration, tmp_path):
    c, page = app.c, app.page
    for meta, phrase in [
        ({"thresholds": {"maintenance": 1.0, "severe": 1e307}}, "are not 0 < maintenance < severe <= 1000"),
        ({"name": "Pump\n3"}, "its name is not plain text"),
    ]:
        path = hostile_calibration(app_calibration(app, tmp_path), tmp_path / "bad.npz", meta=meta)
        refused = call(app, page.load_calibration_file, str(path), None, True, None, None)
        status = refused[c.calibration_status]
        assert status.startswith("⚠️ **Cannot use this model or calibration:** bad.npz: not a usable calibration")
        assert phrase in status and c.session not in refused and "\n" not in status
    link = "[click me](http://evil.example/x) **now** <b>www.evil.example</b>"
    path = hostile_calibration(app_calibration(app, tmp_path), tmp_path / "named.npz", meta={"name": link})
    loaded = call(app, page.load_calibration_file, str(path), None, True, None, None)
    banner = loaded[c.banner]
    assert loaded[c.session].calibration.meta["name"] == link
    for markup in ("[click me](", "**now**", "<b>", "http://", "www.evil"):
        assert markup not in banner, banner
    assert r"\[click me\]\(http\:\/\/evil\.example\/x\)" in banner


def app_calibration(app, tmp_path) -> Path:
    """A calibration file made by the app's model (made once per test folder)."""
    path = tmp_path / "made.npz"
    if not path.exists():
        from anomaly.synth import synthesize_clip

        waves = []
        for i in range(3):
            wave, _ = synthesize_clip("target", "normal", 60 + i)
            waves.append(tmp_path / f"n{i}.wav")
            sf.write(waves[-1], wave, 16000, subtype="PCM_16")
        app.runtime.detector.calibrate(waves).save(path)
    return path


def test_the_visitor_after_the_live_lane_is_full_is_told_so(app):
    from anomaly.ui.lanes import LIVE_LISTENERS, LiveSeats

    c, live_page = app.c, app.live
    app.runtime.live_seats = LiveSeats()  # the streams of the tests before are no one's now
    listeners = [live_page.start(None)[c.live_state] for _ in range(LIVE_LISTENERS)]
    for live in listeners:
        call(app, live_page.listen, _mic_chunks(0.2, 0.2, 0.2)[0], live, None)
    refused = call(app, live_page.start, None)[c.live_status]
    assert refused.startswith(f"⚠️ The live lane is full: {LIVE_LISTENERS} visitors are listening now")
    call(app, live_page.stop, listeners[0], None)
    assert "live lane is full" not in call(app, live_page.start, None)[c.live_status]
    for live in listeners[1:]:
        live_page.stop(live, None)


def test_folders_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    from anomaly.ui.runtime import sweep_dead_outputs

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"gearbox-sound-check-{done.stdout.strip()}-abc"
    alive = tmp_path / f"gearbox-sound-check-{os.getpid()}-def"
    other = tmp_path / "gearbox-sound-check-notes"
    for folder in (dead, alive, other):
        (folder / "x").mkdir(parents=True)
    assert sweep_dead_outputs(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and other.exists()
