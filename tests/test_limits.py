"""Hostile uploads to the running app: each is refused with a message naming the limit and the number,
within 5 s, and without the server's resident memory growing by more than 300 MB.

The server's peak resident memory is read from /proc (VmHWM, reset before each upload through
/proc/PID/clear_refs), so a short spike counts as much as memory kept. The app is the session's shared
``app_server``.
"""

from __future__ import annotations

import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

MAX_SECONDS_PER_UPLOAD = 5.0
MAX_GROWTH_MB = 300.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False, download_files=True)


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def refused_within_budget(app_server, call, *phrases: str) -> dict:
    """Run ``call`` (which must raise AppError), check its message, its time and the server's peak RSS."""
    pid = app_server.pid
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        peak_field = "VmHWM"
    except OSError:  # not allowed here: the RSS after the call is the best we can read
        peak_field = "VmRSS"
    before = _status_mb(pid, "VmRSS")
    started = time.monotonic()
    with pytest.raises(AppError) as caught:
        call()
    elapsed = time.monotonic() - started
    growth = _status_mb(pid, peak_field) - before
    message = str(caught.value)
    for phrase in phrases:
        assert phrase in message, message
    assert "/tmp" not in message and "Traceback" not in message, message
    assert elapsed < MAX_SECONDS_PER_UPLOAD, f"{elapsed:.1f} s: {message}"
    assert growth < MAX_GROWTH_MB, f"+{growth:.0f} MB: {message}"
    print(f"\n  {phrases[0]!r}: {elapsed:.2f} s, RSS {before:.0f} MB, peak +{growth:.0f} MB ({peak_field})")
    return {"elapsed": elapsed, "growth": growth, "message": message}


# --- the hostile files --------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit grayscale PNG of zeros, streamed row by row: a few hundred KB however large it claims."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # filter byte 0, then the pixels
    rows_per_chunk = max(1, (8 << 20) // len(row))
    parts = []
    for start in range(0, height, rows_per_chunk):
        parts.append(compressor.compress(row * min(rows_per_chunk, height - start)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def fast_wav(path: Path, sample_rate: int, data_bytes: int) -> Path:
    """A 16-bit mono WAV whose header says ``sample_rate``, with ``data_bytes`` of (sparse) samples."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + fmt + b"data"
    path.write_bytes(header + struct.pack("<I", data_bytes))
    with open(path, "r+b") as fh:
        fh.truncate(len(header) + 4 + data_bytes)
    return path


def zero_array_npz(path: Path, shape: tuple[int, ...]) -> Path:
    """A calibration-looking .npz holding a float64 array of zeros of ``shape``, deflated as it is written."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("meta.npy", "w") as fh:
            np.lib.format.write_array(fh, np.asarray('{"kind": "gearbox-sound-check calibration"}'))
        with archive.open("scorer_components.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": shape})
            chunk = bytes(16 << 20)
            remaining = int(np.prod(shape)) * 8
            while remaining:
                fh.write(chunk[: min(len(chunk), remaining)])
                remaining -= min(len(chunk), remaining)
    return path


def component_id(client: Client, elem_id: str) -> int:
    return next(c["id"] for c in client.config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def calibration_upload_event(client: Client) -> dict:
    """The (browser-only) event that reads an uploaded calibration file."""
    upload = component_id(client, "calibration-upload")
    for dependency in client.config["dependencies"]:
        if [upload, "upload"] in [list(t) for t in dependency["targets"]]:
            return dependency
    raise AssertionError("no upload event on the calibration file box")


def upload_calibration(client: Client, app_url: str, path: Path):
    """Upload ``path`` to the calibration box as the page does (the event has no public API).

    The page shows a refusal in place, in the calibration status; it is raised here as ``AppError`` with
    that text, so that it is checked like the API's refusals.
    """
    import json
    import uuid

    import httpx

    event = calibration_upload_event(client)
    status_at = event["outputs"].index(component_id(client, "calibration-status"))
    session = uuid.uuid4().hex
    with httpx.Client(base_url=f"{app_url}/gradio_api", timeout=30) as http:
        with open(path, "rb") as fh:
            stored = http.post("/upload", files={"files": (path.name, fh)}).json()[0]
        file_data = {"path": stored, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
        joined = http.post(
            "/queue/join",
            # The file, no name, the map on; the states (session, last analysis, the machine's record) empty.
            json={
                "data": [file_data, "", True] + [None] * (len(event["inputs"]) - 3),
                "fn_index": event["id"],
                "session_hash": session,
            },
        )
        joined.raise_for_status()
        with http.stream("GET", "/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    assert message.get("success"), message  # the page never shows a bare "error"
                    status = message["output"]["data"][status_at]
                    status = status.get("value") if isinstance(status, dict) else status
                    if isinstance(status, str) and status.startswith("⚠️"):
                        raise AppError(status)
                    return message["output"]
    raise AssertionError("the queue closed without an answer")


# --- the uploads --------------------------------------------------------------------------------------


def test_a_spectrogram_128_by_400000_pixels(app_server, client, tmp_path):
    image = zero_png(tmp_path / "wide.png", 400_000, 128)
    assert image.stat().st_size < 200_000
    refused_within_budget(
        app_server,
        lambda: client.predict(handle_file(str(image)), True, api_name="/analyze_spectrogram"),
        "wide.png: the image is 400000 pixels wide",
        "at most 3751 frames (120 s)",
    )


def test_a_png_of_20000_by_20000_pixels(app_server, client, tmp_path):
    image = zero_png(tmp_path / "bomb.png", 20_000, 20_000)
    assert image.stat().st_size < 1_000_000
    refused_within_budget(
        app_server,
        lambda: client.predict(handle_file(str(image)), True, api_name="/analyze_spectrogram"),
        "bomb.png: the image holds 400 million pixels",
        "decompression bomb",
    )


@pytest.mark.parametrize("api_name", ["/score", "/analyze"])
def test_a_49_mb_wav_whose_header_says_24_mhz(app_server, client, tmp_path, api_name):
    wav = fast_wav(tmp_path / "fast.wav", 24_000_000, 49 * 2**20)
    args = (handle_file(str(wav)),) if api_name == "/score" else (handle_file(str(wav)), True)
    refused_within_budget(
        app_server,
        lambda: client.predict(*args, api_name=api_name),
        "fast.wav: the header gives a sample rate of 24000000 Hz",
        "at most 384000 Hz",
    )


def test_a_batch_with_the_24_mhz_wav_reports_it_in_its_row(app_server, client, tmp_path, example_clips):
    wav = fast_wav(tmp_path / "fast.wav", 24_000_000, 49 * 2**20)
    started = time.monotonic()
    table, _ = client.predict(
        [handle_file(str(wav)), handle_file(str(example_clips / "normal_source.wav"))], api_name="/batch"
    )
    assert time.monotonic() - started < MAX_SECONDS_PER_UPLOAD
    bad, good = table["data"]
    error = table["headers"].index("error")
    assert "24000000 Hz; at most 384000 Hz" in bad[error] and good[error] == ""


def test_a_calibration_file_holding_a_2_gb_zero_array(app_server, client, tmp_path):
    npz = zero_array_npz(tmp_path / "huge.npz", (16384, 16384))
    assert npz.stat().st_size < 20 * 2**20
    refused_within_budget(
        app_server,
        lambda: upload_calibration(client, app_server.url, npz),
        "huge.npz: the arrays hold 268,435,457 values (2,048 MB in memory)",
        "at most 8,000,000 values and 64 MB",
    )


def test_a_garbage_calibration_file(app_server, client, tmp_path):
    npz = tmp_path / "garbage.npz"
    npz.write_bytes(np.random.default_rng(0).bytes(100_000))
    result = refused_within_budget(
        app_server,
        lambda: upload_calibration(client, app_server.url, npz),
        "garbage.npz: not a calibration file of this tool",
    )
    assert "pickle" not in result["message"]
