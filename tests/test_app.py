"""The app over HTTP, as its users call it: ``python app.py`` in a subprocess, gradio_client and MCP.

Expectations come from the engine's own rules (``Thresholds.label``, ``window_starts``, the spectrogram
image convention), never from scores of the bundled model, which is a placeholder.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from anomaly.bundle import DEFAULT_BUNDLE, read_config
from anomaly.features import FeatureParams, log_mel_file, window_starts
from anomaly.images import log_mel_to_image
from anomaly.scoring import LABELS, Thresholds

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ENDPOINTS = {"/analyze", "/analyze_spectrogram", "/score", "/batch"}
SCORE_KEYS = {
    "file",
    "score",
    "label",
    "familiar",
    "compared_with",
    "percentile",
    "thresholds",
    "windows",
    "model",
    "departures",
    "notes",
}


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False, download_files=True)


@pytest.fixture(scope="module")
def params() -> FeatureParams:
    """The preprocessing of the bundle the app serves (config.json only: no model needed here)."""
    import os

    bundle = os.environ.get("ANOMALY_BUNDLE") or DEFAULT_BUNDLE
    return FeatureParams.from_dict(read_config(bundle)["preprocessing"])


@pytest.fixture
def not_audio(tmp_path) -> Path:
    path = tmp_path / "notes.wav"
    path.write_text("these are meeting notes, not a recording\n")
    return path


def label_of(value: dict | str) -> str:
    return value["label"] if isinstance(value, dict) else value


def decided(result: dict) -> str:
    """The label the engine's own rule gives the score in a /score result."""
    return Thresholds(**result["thresholds"]).label(result["score"])


def test_api_lists_exactly_the_four_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == ENDPOINTS
    assert not api["unnamed_endpoints"]
    analyze = api["named_endpoints"]["/analyze"]
    assert [p["parameter_name"] for p in analyze["parameters"]] == ["audio", "show_anomaly_map", "calibration"]
    assert len(analyze["returns"]) == 5
    # Every endpoint that scores takes an optional calibration file (the page sends none: it has the session's).
    for name in ENDPOINTS:
        parameter = api["named_endpoints"][name]["parameters"][-1]
        assert parameter["parameter_name"] == "calibration" and parameter["parameter_has_default"], parameter
    # Every output has a name a developer can read (gradio falls back to "value_<id>" without a label).
    for endpoint in api["named_endpoints"].values():
        for returned in endpoint["returns"]:
            assert returned["label"] and not returned["label"].startswith("value_"), returned
    # Named for what they hold: the gauge is HTML, not a score.
    assert [r["label"] for r in analyze["returns"]] == ["spectrogram", "verdict_html", "Verdict", "Details", "timeline"]
    # /score comes first: the API page and its snippet start there.
    assert next(iter(api["named_endpoints"])) == "/score"


def test_analyze_returns_pictures_and_the_engine_decision(client, example_clips):
    clip = example_clips / "fault_tooth.wav"
    spectrogram, gauge, label, details, timeline = client.predict(
        handle_file(str(clip)), True, api_name="/analyze"
    )
    for picture in (spectrogram, timeline):
        with Image.open(picture) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    assert 'class="gauge"' in gauge and "Needs maintenance" in gauge
    scored = client.predict(handle_file(str(clip)), api_name="/score")
    assert label_of(label) in LABELS
    assert label_of(label) == scored["label"] == decided(scored)
    assert clip.name in details and f"{scored['score']:.2f}" in details
    assert "Processing time" in details and "Model" in details


def test_the_anomaly_map_changes_the_picture(client, example_clips):
    clip = handle_file(str(example_clips / "fault_tooth.wav"))
    with_map = np.asarray(Image.open(client.predict(clip, True, api_name="/analyze")[0]).convert("RGB"))
    without = np.asarray(Image.open(client.predict(clip, False, api_name="/analyze")[0]).convert("RGB"))
    assert with_map.shape == without.shape
    assert np.any(with_map != without)


def test_score_json_contract(client, example_clips, params):
    clip = example_clips / "normal_source.wav"
    result = client.predict(handle_file(str(clip)), api_name="/score")
    assert set(result) == SCORE_KEYS
    assert result["file"] == clip.name
    assert result["label"] in LABELS and result["label"] == decided(result)
    assert 0.0 <= result["percentile"] <= 100.0
    assert set(result["thresholds"]) == {"maintenance", "severe"}
    assert result["thresholds"]["maintenance"] < result["thresholds"]["severe"]
    n_samples = sf.info(str(clip)).frames * params.sr // sf.info(str(clip)).samplerate
    n_frames = 1 + n_samples // params.hop_length
    assert len(result["windows"]) == len(window_starts(n_frames, params))
    assert all(set(w) == {"start_s", "score"} for w in result["windows"])
    assert result["score"] == pytest.approx(max(w["score"] for w in result["windows"]), abs=1e-4)
    assert {"source", "revision"} <= set(result["model"])


def test_analyze_spectrogram_image(client, example_clips, params, tmp_path):
    clip = example_clips / "normal_source.wav"
    image = example_clips / "spectrogram_normal_source.png"
    if not image.is_file():
        image = tmp_path / "spectrogram_normal_source.png"
        Image.fromarray(log_mel_to_image(log_mel_file(clip, params), params)).save(image)
    spectrogram, gauge, label, details, timeline = client.predict(
        handle_file(str(image)), True, api_name="/analyze_spectrogram"
    )
    assert Path(spectrogram).is_file() and Path(timeline).is_file() and 'class="gauge"' in gauge
    assert label_of(label) in LABELS
    # The image holds the clip's log-mel quantised to 8 bits: it scores like the clip itself.
    audio = client.predict(handle_file(str(clip)), api_name="/score")
    shown = float(details.split("**Score:** ")[1].split(",")[0])
    assert shown == pytest.approx(audio["score"], rel=0.05)
    assert label_of(label) == Thresholds(**audio["thresholds"]).label(shown)


def test_batch_scores_good_files_and_reports_the_bad_one(client, example_clips, not_audio):
    good = [example_clips / "normal_source.wav", example_clips / "fault_wear.wav"]
    files = [handle_file(str(good[0])), handle_file(str(not_audio)), handle_file(str(good[1]))]
    table, csv_path = client.predict(files, api_name="/batch")
    assert table["headers"] == ["file", "score", "percentile", "label", "familiar", "error"]
    rows = table["data"]
    assert [row[0] for row in rows] == [good[0].name, not_audio.name, good[1].name]
    bad = rows[1]
    assert bad[1] is None and bad[3] is None and "not a readable audio file" in bad[5]
    for row, clip in zip((rows[0], rows[2]), good, strict=True):
        scored = client.predict(handle_file(str(clip)), api_name="/score")
        assert row[1] == pytest.approx(scored["score"], abs=1e-3)
        assert row[3] == scored["label"] and row[4] is True and row[5] == ""
    with open(csv_path, newline="") as fh:
        written = list(csv.DictReader(fh))
    assert list(written[0]) == [*table["headers"], "compared_with", "model", "calibration"]
    assert len(written) == 3
    assert written[1]["file"] == not_audio.name and written[1]["error"] == bad[5]
    # Which model and which calibration answered travel with every row.
    assert all(r["model"] == "the bundled demo model" and r["calibration"] == "" for r in written)
    assert all("demo gearbox" in r["compared_with"] for r in written)


def test_a_picture_and_a_text_file_in_a_batch_are_rows_of_their_own(client, example_clips, tmp_path):
    """gradio's own type check would refuse the whole batch ("Invalid file type"); each is an error row."""
    picture, notes = tmp_path / "photo.png", tmp_path / "notes.txt"
    Image.new("RGB", (8, 8)).save(picture)
    notes.write_text("not a recording")
    good = example_clips / "normal_source.wav"
    table, _ = client.predict([handle_file(str(p)) for p in (good, picture, notes)], api_name="/batch")
    rows = table["data"]
    assert [row[0] for row in rows] == ["normal_source.wav", "photo.png", "notes.txt"]
    assert rows[0][3] in LABELS and rows[0][5] == ""
    assert all(row[1] is None and "not a readable audio file" in row[5] for row in rows[1:]), rows


@pytest.mark.parametrize("endpoint", ["/analyze", "/score"])
def test_not_audio_is_a_clear_error(client, not_audio, endpoint):
    args = (handle_file(str(not_audio)), True) if endpoint == "/analyze" else (handle_file(str(not_audio)),)
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=endpoint)
    message = str(caught.value)
    assert "notes.wav" in message and "not a readable audio file" in message
    assert "Traceback" not in message and "/gradio" not in message  # no server paths


def test_too_long_recording_is_refused_with_its_duration(client, tmp_path):
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(path, 0.02 * rng.standard_normal(130 * 8000).astype(np.float32), 8000, subtype="PCM_16")
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(path)), True, api_name="/analyze")
    message = str(caught.value)
    assert "long.wav" in message and "130.0 s long" in message and "at most 120 s" in message


@pytest.mark.parametrize(
    ("picture", "expected"),
    [
        (lambda rng: rng.integers(0, 256, (128, 300, 3), dtype=np.uint8), "colour-mapped"),
        (lambda rng: rng.integers(0, 256, (100, 300), dtype=np.uint8), "128 pixels high"),
        (None, "not a readable image"),
    ],
    ids=["colour-noise", "wrong-height", "not-an-image"],
)
def test_wrong_images_are_refused(client, tmp_path, picture, expected):
    path = tmp_path / "picture.png"
    if picture is None:
        path.write_bytes(b"\x89PNG but not really")
    else:
        Image.fromarray(picture(np.random.default_rng(1))).save(path)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(path)), True, api_name="/analyze_spectrogram")
    assert "picture.png" in str(caught.value) and expected in str(caught.value)


def test_empty_request_is_a_clear_error(client):
    with pytest.raises(AppError, match="Upload or record"):
        client.predict(None, api_name="/score")


async def _mcp_session(url: str, calls):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await calls(session)


def _data_uri(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


def test_mcp_score_tool(app_url, client, example_clips, not_audio):
    clip = example_clips / "fault_tooth.wav"

    async def calls(session):
        tools = await session.list_tools()
        good = await session.call_tool("score", {"audio": _data_uri(clip)})
        bad = await session.call_tool("score", {"audio": _data_uri(not_audio)})
        return tools, good, bad

    tools, good, bad = asyncio.run(_mcp_session(app_url, calls))
    by_name = {tool.name: tool for tool in tools.tools}
    assert set(by_name) == {"analyze", "analyze_spectrogram", "score", "batch"}
    assert "plain JSON" in by_name["score"].description
    assert not good.isError
    text = good.content[0].text
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        result = ast.literal_eval(text)  # gradio renders a dict output as its Python repr
    direct = client.predict(handle_file(str(clip)), api_name="/score")
    assert set(result) == SCORE_KEYS
    assert result["score"] == pytest.approx(direct["score"], abs=1e-3) and result["label"] == direct["label"]
    assert bad.isError and "not a readable audio file" in bad.content[0].text
    with pytest.raises(AppError) as api_error:
        client.predict(handle_file(str(not_audio)), api_name="/score")
    # The same words through both doors (an MCP data URI arrives as "file.wav", an upload by its name).
    assert bad.content[0].text.split(": ", 1)[1] == str(api_error.value).split(": ", 1)[1]


def test_a_refused_upload_is_one_line_in_the_server_log(app_server, client, tmp_path):
    path = tmp_path / "log-me-once.wav"
    path.write_text("not a recording\n")
    before = app_server.log.read_text(errors="replace")
    with pytest.raises(AppError, match="log-me-once.wav: not a readable audio file"):
        client.predict(handle_file(str(path)), api_name="/score")
    added = app_server.log.read_text(errors="replace")[len(before) :]
    lines = [line for line in added.splitlines() if "log-me-once.wav" in line]
    assert len(lines) == 1 and "refused: log-me-once.wav: not a readable audio file" in lines[0], added
    assert "Traceback" not in added, added


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("/etc/passwd", "Cannot move /etc/passwd to the gradio cache dir because it was not uploaded by a user"),
        ("http://169.254.169.254/latest/x.wav", "Hostname 169.254.169.254 failed validation"),
    ],
)
def test_a_path_or_private_url_typed_into_the_api_is_refused_with_its_reason(app_server, given, reason):
    """gradio refuses these before any handler runs; the caller hears why, the log gets one line."""
    import httpx

    before = app_server.log.read_text(errors="replace")
    with httpx.Client(base_url=app_server.url, timeout=60) as http:
        data = [{"path": given, "meta": {"_type": "gradio.FileData"}}, None]
        event_id = http.post("/gradio_api/call/score", json={"data": data}).json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/score/{event_id}") as stream:
            text = "".join(stream.iter_text())
    assert text.startswith("event: error"), text
    answer = json.loads(text.split("data:", 1)[1])
    assert answer["title"] == "Cannot use this input" and answer["error"].startswith(
        f"The input cannot be used: {reason}. Send a file with the call itself"
    )
    added = app_server.log.read_text(errors="replace")[len(before) :]
    refusals = [line for line in added.splitlines() if "refused: The input cannot be used" in line]
    assert len(refusals) == 1 and reason in refusals[0] and "Traceback" not in added, added


def test_a_bad_bundle_stops_the_app_with_one_line_and_exit_2(tmp_path):
    """The operator's mistake, said as the CLI says it (exit 2), not as a traceback."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ANOMALY_BUNDLE=str(tmp_path / "no-such-bundle"), GRADIO_ANALYTICS_ENABLED="False")
    app_py = Path(__file__).resolve().parent.parent / "app.py"
    done = subprocess.run([sys.executable, str(app_py)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'no-such-bundle'}: the model bundle folder does not exist"
    ), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("GEARBOX_UPLOAD_BUDGET", "lots", "GEARBOX_UPLOAD_BUDGET must be two whole numbers"),
        ("GEARBOX_UNUSED_UPLOAD_S", "-5", "GEARBOX_UNUSED_UPLOAD_S must be a positive number"),
        ("GEARBOX_PROXY_HOPS", "one", "GEARBOX_PROXY_HOPS must be a whole number"),
        ("GEARBOX_CACHE_SWEEP", "300", "GEARBOX_CACHE_SWEEP must be two whole numbers"),
    ],
)
def test_a_bad_setting_stops_the_app_with_one_line_and_exit_2(tmp_path, name, value, says):
    import os
    import subprocess
    import sys

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", **{name: value})
    app_py = Path(__file__).resolve().parent.parent / "app.py"
    done = subprocess.run([sys.executable, str(app_py)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(f"error: {says}"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_the_apps_upload_guard_is_in_front_of_gradio(app_url):
    """The guard (tests/test_uploads.py) answers an upload that does not say its size before gradio reads it."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(app_url)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411") and b"An upload must say its size" in answer, answer[:300]


def test_uploads_above_the_size_limit_are_refused_by_the_server(app_url):
    import io

    import httpx

    too_big = io.BytesIO(b"\0" * (50 * 1024 * 1024 + 1))
    response = httpx.post(
        f"{app_url}/gradio_api/upload", files={"files": ("big.wav", too_big, "audio/wav")}, timeout=120
    )
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_examples_are_cached_at_start_where_the_environment_says(app_server):
    root = Path(__file__).resolve().parent.parent / "examples"
    clips = sorted(root.glob("*.wav"))
    if not clips:
        pytest.skip("no bundled examples in examples/")
    log = app_server.log.read_text()
    line = next((x for x in log.splitlines() if "Caching examples at" in x), None)
    assert line is not None, log[-3000:]
    folder = Path(line.split("'")[1])
    assert folder.is_relative_to(app_server.work / "examples-cache")
    with open(folder / "log.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 1 + len(clips)  # header + one cached result per example


def page_texts(url: str) -> dict[str, str]:
    """Markdown shown on the page, by elem_id (from gradio's /config)."""
    from urllib.request import urlopen

    with urlopen(f"{url}/config", timeout=30) as response:
        config = json.loads(response.read())
    return {
        c["props"]["elem_id"]: c["props"].get("value")
        for c in config["components"]
        if c.get("props", {}).get("elem_id") and isinstance(c["props"].get("value"), str)
    }


def test_header_says_what_the_model_was_trained_on(app_url, params):
    import os

    training = read_config(os.environ.get("ANOMALY_BUNDLE") or DEFAULT_BUNDLE).get("training") or {}
    texts = page_texts(app_url)
    assert texts["model-line"].startswith("Model: ")
    if training.get("synthetic"):
        assert "synthetic gearbox sounds" in texts["synthetic-note"]


def test_an_unavailable_hub_model_falls_back_and_the_page_says_why(launch_app, tmp_path, example_clips):
    repo = "nobody/no-such-gearbox-model"
    with launch_app(tmp_path, ANOMALY_HUB_REPO=repo, ANOMALY_HUB_REVISION="v1", ANOMALY_BUNDLE="") as server:
        line = page_texts(server.url)["model-line"]
        assert line.startswith("⚠️") and repo in line and "bundled demo model" in line
        result = Client(server.url, verbose=False).predict(
            handle_file(str(example_clips / "normal_source.wav")), api_name="/score"
        )
    assert result["model"]["source"] == "bundled" and result["model"]["repo_id"] == repo


def test_batch_csv_cells_cannot_run_as_formulas(client, example_clips, tmp_path):
    names = ['=HYPERLINK("evil")+1.wav', "+1+2.wav", "-3+4.wav", "@SUM(A1).wav"]
    files = []
    for name in names:
        path = tmp_path / name
        path.write_bytes((example_clips / "normal_source.wav").read_bytes())
        files.append(handle_file(str(path)))
    table, csv_path = client.predict(files, api_name="/batch")
    with open(csv_path, newline="") as fh:
        written = list(csv.reader(fh))[1:]
    shown = [row[0] for row in table["data"]]  # as gradio stored them (it escapes the quotes)
    assert [name[0] for name in shown] == [name[0] for name in names]
    assert [row[0] for row in written] == ["'" + name for name in shown]
    for row in written:
        float(row[1])  # numbers stay numbers


def test_an_examples_cache_left_half_done_by_a_crash_is_rebuilt(launch_app, tmp_path):
    """kill -9 while the examples are being cached, start again: every example is cached and answers."""
    import os
    import signal
    import time

    from anomaly.ui.launcher import app_server

    clips = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.wav"))
    with app_server(tmp_path) as first:
        deadline = time.monotonic() + 240
        while not any(len(p.read_text().splitlines()) > 1 for p in tmp_path.glob("examples-cache/*/*/indices.csv")):
            assert first.process.poll() is None and time.monotonic() < deadline, first.log_tail()
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.process.wait()
    (partial,) = tmp_path.glob("examples-cache/*/*/indices.csv")
    assert 0 < len(partial.read_text().split()) < len(clips)  # really cut short
    with launch_app(tmp_path) as second:
        assert "incomplete or damaged: caching the examples again" in second.log_tail(10**7)
        from anomaly.ui.serving import examples_cache_is_complete

        assert examples_cache_is_complete(partial.parent, len(clips))
        with open(partial.parent / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        verdicts = [ast.literal_eval(r["Verdict"])["value"]["label"] for r in rows]
        assert len(rows) == len(clips) and all(v in LABELS for v in verdicts), verdicts
        # A batch makes the app's download folder; stopped with SIGTERM (as a Space stops it), it goes too.
        Client(second.url, verbose=False).predict([handle_file(str(clips[0]))], api_name="/batch")
        pid = second.pid
        assert list(Path(tempfile.gettempdir()).glob(f"gearbox-sound-check-{pid}-*"))
    assert not list(Path(tempfile.gettempdir()).glob(f"gearbox-sound-check-{pid}-*"))


# --- the API takes a calibration ---------------------------------------------------------------------------

MACHINE = "Pump 7, west hall"


@pytest.fixture(scope="module")
def served_detector():
    """The engine, in this process, with the bundle the app serves."""
    import os

    from anomaly.detector import Detector

    return Detector.load(os.environ.get("ANOMALY_BUNDLE") or DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def machine_calibration(served_detector, tmp_path_factory) -> Path:
    """A calibration of a named machine made with the served model on a few synthetic normal clips, saved as
    the Adapt tab and ``calibrate`` save it."""
    from anomaly.synth import synthesize_clip

    out = tmp_path_factory.mktemp("machine")
    normals = []
    for seed in range(4):
        wave, _ = synthesize_clip("source", "normal", 300 + seed)
        sf.write(out / f"pump7_normal_{seed}.wav", wave, 16000, subtype="PCM_16")
        normals.append(out / f"pump7_normal_{seed}.wav")
    return served_detector.calibrate(normals, name=MACHINE).save(out / "pump7.npz")


def test_score_analyze_and_batch_against_a_calibration_file_name_its_machine(
    client, served_detector, machine_calibration, example_clips
):
    clip = example_clips / "fault_wear.wav"
    calibration = handle_file(str(machine_calibration))
    adapted = served_detector.with_calibration(served_detector.load_calibration(machine_calibration))
    expected = adapted.analyze(clip)

    result = client.predict(handle_file(str(clip)), calibration, api_name="/score")
    assert MACHINE in result["compared_with"] and "4 normal recordings" in result["compared_with"]
    assert result["score"] == pytest.approx(expected.score, abs=1e-3)
    assert result["label"] == expected.label
    assert result["thresholds"] == pytest.approx(
        {"maintenance": adapted.thresholds.maintenance, "severe": adapted.thresholds.severe}, abs=1e-4
    )
    # Without the file, the same call is scored against the demo model again: nothing stuck to the client.
    plain = client.predict(handle_file(str(clip)), api_name="/score")
    assert MACHINE not in plain["compared_with"] and "demo gearbox" in plain["compared_with"]

    _, gauge, label, details, _ = client.predict(
        handle_file(str(clip)), True, calibration, api_name="/analyze"
    )
    assert label_of(label) == expected.label and MACHINE in details and 'class="gauge"' in gauge

    table, csv_path = client.predict([handle_file(str(clip))], calibration, api_name="/batch")
    assert table["data"][0][3] == expected.label
    with open(csv_path, newline="") as fh:
        row = next(csv.DictReader(fh))
    assert MACHINE in row["compared_with"] and row["calibration"].startswith(MACHINE)


def test_a_calibration_file_that_cannot_be_used_is_one_clear_message(client, example_clips, tmp_path):
    clip = handle_file(str(example_clips / "normal_source.wav"))
    junk = tmp_path / "pump_notes.npz"
    junk.write_text("not a calibration\n")
    for endpoint, args in [("/score", (clip,)), ("/analyze", (clip, True)), ("/batch", ([clip],))]:
        with pytest.raises(AppError) as refused:
            client.predict(*args, handle_file(str(junk)), api_name=endpoint)
        message = str(refused.value)
        assert "pump_notes.npz" in message and "calibration" in message, message
        assert "Traceback" not in message and "/tmp/" not in message, message


# --- an upload flood ---------------------------------------------------------------------------------------

FLOOD_BUDGET, UNUSED_UPLOAD_S = 40, 3


def test_an_upload_flood_leaves_the_app_answering_with_a_clear_message(launch_app, tmp_path, example_clips):
    """One client floods /gradio_api/upload from four threads until refused; another's /score still answers;
    an upload bigger than the free disk is refused with a sentence; the flood's unused uploads are deleted
    after the (shortened) unused life while the one a call used stays, and naming a deleted one says so."""
    import shutil
    import socket
    import threading
    import time
    from urllib.parse import urlsplit

    import httpx

    from anomaly.ui.launcher import http_call, http_upload

    env = {"GEARBOX_UPLOAD_BUDGET": f"{FLOOD_BUDGET},50", "GEARBOX_UNUSED_UPLOAD_S": str(UNUSED_UPLOAD_S)}
    env["GEARBOX_PROXY_HOPS"] = "1"  # as on a Space: the two visitors are told apart by X-Forwarded-For
    with launch_app(tmp_path, **env) as server:
        visitor = httpx.Client(base_url=server.url, headers={"x-forwarded-for": "198.51.100.2"}, timeout=120)
        used = http_upload(visitor, example_clips / "normal_source.wav")
        flood: list[httpx.Response] = []

        def send_uploads(thread: int) -> None:
            with httpx.Client(base_url=server.url, headers={"x-forwarded-for": "203.0.113.7"}, timeout=60) as http:
                for i in range(FLOOD_BUDGET // 4 + 5):  # distinct contents: a folder each
                    content = f"flood {thread} {i} ".encode() * 1000
                    flood.append(http.post("/gradio_api/upload", files={"files": (f"f{thread}-{i}.wav", content)}))

        threads = [threading.Thread(target=send_uploads, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        during = http_call(visitor, "/score", [used, None])  # while the flood runs
        for thread in threads:
            thread.join()
        after = http_call(visitor, "/score", [used, None])
        assert during[0]["label"] in LABELS and after[0] == during[0]

        accepted = [r for r in flood if r.status_code == 200]
        refused = [r for r in flood if r.status_code != 200]
        assert len(accepted) == FLOOD_BUDGET and len(refused) == len(flood) - FLOOD_BUDGET > 0
        assert {r.status_code for r in refused} == {429}
        assert refused[0].json()["detail"].startswith("Too many uploads from you: ") and refused[0].json()[
            "detail"
        ].endswith(f"at most 50 MB and {FLOOD_BUDGET} uploads per 10 minutes. Try again later.")

        # An upload that says it is bigger than the free disk is refused before a byte of it is read.
        claimed = shutil.disk_usage(tmp_path).free + 2**30
        where = urlsplit(server.url)
        with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
            sock.sendall(
                b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.9\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % claimed
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 507") and b"The server's disk is full for now" in answer, answer[:300]

        flooded = [Path(r.json()[0]) for r in accepted]
        assert all(p.is_file() for p in flooded[-5:])  # the youngest are still there now...
        deadline = time.monotonic() + UNUSED_UPLOAD_S + 15
        while any(p.parent.exists() for p in flooded):  # ...and gone after the unused life
            assert time.monotonic() < deadline, [p for p in flooded if p.parent.exists()][:3]
            time.sleep(0.2)
        assert Path(used["path"]).is_file()  # older than any of them, but a call used it

        gone = {"path": str(flooded[0]), "orig_name": flooded[0].name, "meta": {"_type": "gradio.FileData"}}
        event_id = visitor.post("/gradio_api/call/score", json={"data": [gone, None]}).json()["event_id"]
        with visitor.stream("GET", f"/gradio_api/call/score/{event_id}") as stream:
            text = "".join(stream.iter_text())
        assert text.startswith("event: error"), text
        assert json.loads(text.split("data:", 1)[1])["error"] == (
            f"{flooded[0].name} is no longer on the server: an upload that no call uses within "
            f"{UNUSED_UPLOAD_S} seconds is deleted, any upload after 15 minutes; upload it again."
        )
        assert after == http_call(visitor, "/score", [used, None])  # and the app answers still
        visitor.close()
        assert "Traceback" not in server.log_tail(10**7)
