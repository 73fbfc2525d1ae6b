"""Speed and memory on this machine: ``python -m anomaly bench [--json] [--quick] [--bundle DIR]``.

Every number is a median over repetitions after a warm-up, on synthetic clips written to a temporary
folder (``anomaly.synth``):

core_ms_p50, core_ms_p95
    One 10 s clip through ``Detector.analyze``: decode, log-mel, encoder, score (in this process).
mel_floor_ms_p50
    Decode and log-mel alone (``log_mel_file``): the part of the core path no model change can remove.
batch_clips_per_s
    200 clips through ``Detector.analyze_many`` (threaded decoding, the network in large batches).
api_score_ms_p50, api_analyze_ms_p50, api_noop_ms_p50
    Round trips through ``gradio_client`` to ``python app.py``, started here on a free loopback port:
    ``/score``, ``/analyze`` and ``/ping``, an endpoint that does nothing (the HTTP and queue floor; null
    when the app has none).
cold_start_s
    From starting ``python app.py`` to its first answered ``/score``, with warm caches: the app is started
    once before (page cache, bytecode, cached examples), and the second start is measured.
rss_mb
    Peak resident memory of the app process (``VmHWM``) after all requests, including one full batch.
live_update_ms_p50, live_score_ms_p50
    Listening live, in this process with the bundle: one update is a 1 s chunk of 48 kHz audio fed to
    ``LiveSession`` (which scores the last 2 s window) plus the gauge and the rolling timeline the page
    shows; ``live_score_ms_p50`` is the chunk and the scoring alone.
live_rss_drift_mb
    Resident memory of this process after 600 such updates (10 minutes of audio, fed as fast as they
    run) minus before them, measured after a minute of warm-up that fills the rolling history.

The table also breaks the core path into its steps, to show where the time goes. Targets are printed
beside the numbers; a missed target does not change the exit code, which is 1 only when something
could not be measured (for instance, the app did not start). Timings on a shared or busy machine are
noisy: the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("anomaly")

APP_PATH = Path(__file__).resolve().parent.parent / "app.py"
NOOP_ENDPOINT = "/ping"

# metric -> (comparison, limit, unit, what it is)
TARGETS: dict[str, tuple[str, float | None, str, str]] = {
    "core_ms_p50": ("<=", 15.0, "ms", "one 10 s clip: decode + log-mel + encoder + score"),
    "core_ms_p95": ("", None, "ms", "the same, 95th percentile"),
    "mel_floor_ms_p50": ("", None, "ms", "decode + log-mel alone"),
    "core_vs_mel_floor": ("<=", 3.0, "x", "core p50 / log-mel floor p50"),
    "batch_clips_per_s": (">=", 100.0, "clips/s", "200 clips through analyze_many"),
    "api_score_ms_p50": ("<=", 60.0, "ms", "/score through gradio_client"),
    "api_analyze_ms_p50": ("<=", 200.0, "ms", "/analyze (with pictures) through gradio_client"),
    "api_noop_ms_p50": ("", None, "ms", f"{NOOP_ENDPOINT}: the HTTP floor"),
    "api_score_http_ms_p50": ("", None, "ms", "/score through plain HTTP, one kept-alive connection"),
    "api_noop_http_ms_p50": ("", None, "ms", f"{NOOP_ENDPOINT} through plain HTTP: the server's floor"),
    "cold_start_s": ("<=", 12.0, "s", "start of python app.py to the first /score answer"),
    "rss_mb": ("<=", 1200.0, "MB", "peak resident memory of the app (VmHWM)"),
    "batch_120s_rss_mb": ("<=", 1200.0, "MB", "the same after a /batch of 100 recordings of 120 s"),
    "live_update_ms_p50": ("<=", 100.0, "ms", "listen live: 1 s chunk -> score of the last 2 s + pictures"),
    "live_score_ms_p50": ("", None, "ms", "the same without the pictures"),
    "live_rss_drift_mb": ("<=", 50.0, "MB", "resident memory over 600 live updates (10 min of audio)"),
}
JSON_KEYS = [
    "core_ms_p50",
    "core_ms_p95",
    "mel_floor_ms_p50",
    "batch_clips_per_s",
    "api_score_ms_p50",
    "api_analyze_ms_p50",
    "api_noop_ms_p50",
    "cold_start_s",
    "rss_mb",
    "batch_120s_rss_mb",
    "live_update_ms_p50",
    "live_rss_drift_mb",
]


# --- the app in a subprocess (also used by scripts/load_test.py) ------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A ``python app.py`` process started by ``app_server``."""

    process: subprocess.Popen
    url: str
    log_path: Path
    started: float  # time.monotonic() just before the process was started

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def memory_mb(self, field: str = "VmRSS") -> float | None:
        """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of the app process, in MB."""
        return process_memory_mb(self.pid, field)

    def wait_until_serving(self, timeout_s: float = 240.0) -> None:
        """Block until the server answers HTTP; raise RuntimeError if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"app.py exited with code {self.process.returncode} before serving:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py not serving after {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.1)


def process_memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextmanager
def app_server(work: Path, *, bundle: str | Path | None = None, **env: str) -> Iterator[AppServer]:
    """Start ``python app.py`` on a free loopback port; stop it on exit.

    ``work`` is its working directory and holds its log, upload folder and example cache (so a second
    start in the same folder has warm caches). ``bundle`` sets ``ANOMALY_BUNDLE``; ``env`` adds variables.
    Waiting until it serves is up to the caller (``wait_until_serving``), so that start-up can be timed.
    """
    if not APP_PATH.is_file():
        raise RuntimeError(f"{APP_PATH} not found: the app is not installed next to the engine")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    child_env = dict(os.environ)
    child_env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_EXAMPLES_CACHE=str(work / "examples-cache"),
        GRADIO_TEMP_DIR=str(work / "uploads"),
        HF_HUB_DISABLE_TELEMETRY="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    if bundle is not None:
        child_env["ANOMALY_BUNDLE"] = str(Path(bundle).resolve())
    child_env.update(env)
    log_path = work / "app.log"
    with open(log_path, "ab") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(APP_PATH)],
            cwd=work,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = AppServer(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path, started=started)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def loopback_client(url: str, **kwargs):
    """A ``gradio_client.Client`` for an app on this machine.

    ``ssl_verify=False`` because gradio_client builds a new httpx client for every upload, call and
    download, and with verification on each one loads the CA bundle (10 to 50 ms, up to three times per
    request); over plain http on loopback there is no TLS, so that would only time the client's set-up.
    """
    from gradio_client import Client

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    options = {"verbose": False, "download_files": False, "ssl_verify": False, "analytics_enabled": False}
    return Client(url, **{**options, **kwargs})


def http_call(http, api_name: str, data: list) -> object:
    """One call through gradio's documented HTTP API (``/gradio_api/call``) on an open httpx client."""
    answer = http.post(f"/gradio_api/call/{api_name.strip('/')}", json={"data": data})
    answer.raise_for_status()
    event_id = answer.json()["event_id"]
    with http.stream("GET", f"/gradio_api/call/{api_name.strip('/')}/{event_id}") as stream:
        text = "".join(stream.iter_text())
    if "event: complete" not in text:
        raise RuntimeError(f"{api_name} did not complete: {text[-300:]}")
    return json.loads(text.split("event: complete", 1)[1].split("data:", 1)[1].strip())


def http_upload(http, path: Path) -> dict:
    with open(path, "rb") as fh:
        answer = http.post("/gradio_api/upload", files=[("files", (path.name, fh))])
    answer.raise_for_status()
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


# --- measuring ---------------------------------------------------------------------------------------------


def timings_ms(call: Callable[[], object], reps: int, *, warmup: int = 3) -> np.ndarray:
    """Wall-clock milliseconds of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    out = np.empty(reps)
    for i in range(reps):
        started = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - started) * 1000.0
    return out


def synth_clips(folder: Path, n_unique: int, n_total: int, sr: int) -> list[Path]:
    """``n_total`` 10 s clip files (copies of ``n_unique`` synthetic ones, normal and faulty)."""
    from anomaly.synth import synthesize_clip, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    unique = []
    for i in range(n_unique):
        label = "anomaly" if i % 3 == 2 else "normal"
        wave, _ = synthesize_clip("source" if i % 2 == 0 else "target", label, 1000 + i, sr=sr)
        unique.append(write_clip(folder / f"clip_{i:03d}.wav", wave, sr))
    clips = list(unique)
    for i in range(n_unique, n_total):
        clips.append(Path(shutil.copyfile(unique[i % n_unique], folder / f"clip_{i:03d}.wav")))
    return clips


def core_breakdown(detector, clip: Path, reps: int) -> dict[str, float]:
    """Median milliseconds of each step of ``Detector.analyze`` on one clip."""
    from anomaly.embedding import raw_features, standardize
    from anomaly.features import load_audio, log_mel, min_seconds, windows

    params = detector.params
    y = load_audio(clip, params.sr, min_seconds=min_seconds(params))
    spec = log_mel(y, params)
    w = windows(spec, params)
    x = detector.model_input(w)
    enc = detector.encode(x)
    emb = standardize(raw_features(detector.recipe, w, enc), detector.bundle.arrays)
    steps: dict[str, Callable[[], object]] = {
        "decode (load_audio)": lambda: load_audio(clip, params.sr, min_seconds=min_seconds(params)),
        "log-mel": lambda: log_mel(y, params),
        "windows + normalise": lambda: detector.model_input(windows(spec, params)),
        f"encoder ({len(w)} windows)": lambda: detector.encode(x),
        "embedding blocks": lambda: standardize(
            raw_features(detector.recipe, w, enc), detector.bundle.arrays
        ),
        "score + decision": lambda: detector.decide(float(detector.window_scores(emb).max())),
    }
    return {name: float(np.median(timings_ms(call, reps))) for name, call in steps.items()}


def measure_engine(bundle: str | None, clips: list[Path], *, quick: bool) -> tuple[dict, dict]:
    from anomaly.detector import Detector
    from anomaly.features import log_mel_file

    reps = 15 if quick else 60
    detector = Detector.load(bundle)
    clip = clips[0]
    log.info("core path: %d analyses of one 10 s clip", reps)
    core = timings_ms(lambda: detector.analyze(clip), reps, warmup=5)
    floor = timings_ms(lambda: log_mel_file(clip, detector.params), reps, warmup=5)
    breakdown = core_breakdown(detector, clip, reps)

    batch_runs = 1 if quick else 3
    log.info("batch: %d x %d clips through analyze_many", batch_runs, len(clips))
    detector.analyze_many(clips[:8])
    rates = []
    for _ in range(batch_runs):
        started = time.perf_counter()
        results = detector.analyze_many(clips)
        rates.append(len(results) / (time.perf_counter() - started))
    numbers = {
        "core_ms_p50": float(np.median(core)),
        "core_ms_p95": float(np.percentile(core, 95)),
        "mel_floor_ms_p50": float(np.median(floor)),
        "batch_clips_per_s": float(np.median(rates)),
    }
    return numbers, breakdown


LIVE_SR = 48000  # what browsers' microphones usually deliver
LIVE_UPDATES = 600  # one a second: 10 minutes of listening
LIVE_WARMUP_UPDATES = 70  # more than the rolling minute, so that the history is full before measuring


def measure_live(bundle: str | None, *, quick: bool) -> dict:
    """Listening live: time per update and resident-memory drift over 10 minutes of audio."""
    import gc

    from anomaly import plots
    from anomaly.detector import Detector
    from anomaly.features import resample
    from anomaly.live import LiveSession
    from anomaly.synth import synthesize_clip

    detector = Detector.load(bundle)
    sr = detector.params.sr
    normal, _ = synthesize_clip("source", "normal", 2000, sr=sr)
    faulty, _ = synthesize_clip("source", "anomaly", 2000, fault="wear", sr=sr)
    audio = resample(np.concatenate([normal, faulty]), sr, LIVE_SR)  # 20 s, alternating normal and fault
    chunks = [audio[i : i + LIVE_SR] for i in range(0, len(audio) - LIVE_SR + 1, LIVE_SR)]
    session = LiveSession(detector.params)
    t = detector.thresholds

    def update(i: int, draw: bool = True) -> None:
        readings = session.feed(chunks[i % len(chunks)], LIVE_SR, detector)
        if draw and readings and session.last.score is not None:
            plots.gauge_html(session.last.score, t, familiar=session.last.familiar)
            starts, scores = session.timeline()
            plots.live_timeline(starts, scores, t, session.window_s, now_s=session.heard_s)

    counter = itertools.count()
    for _ in range(LIVE_WARMUP_UPDATES):
        update(next(counter))
    reps = 20 if quick else 60
    whole = timings_ms(lambda: update(next(counter)), reps, warmup=0)
    score_only = timings_ms(lambda: update(next(counter), draw=False), reps, warmup=0)

    log.info("listen live: %d updates for the memory drift", LIVE_UPDATES)
    gc.collect()
    before = process_memory_mb(os.getpid())
    for _ in range(LIVE_UPDATES):
        update(next(counter))
    gc.collect()
    after = process_memory_mb(os.getpid())
    return {
        "live_update_ms_p50": float(np.median(whole)),
        "live_score_ms_p50": float(np.median(score_only)),
        "live_rss_drift_mb": None if before is None or after is None else after - before,
    }


def long_recording(clips: list[Path], out: Path, seconds: float = 120.0) -> Path:
    """One recording of ``seconds`` made of the synthetic clips end to end."""
    import soundfile as sf

    parts, sr, total = [], None, 0.0
    for clip in itertools.cycle(clips):
        y, sr = sf.read(clip, dtype="float32")
        parts.append(y)
        total += len(y) / sr
        if total >= seconds:
            break
    sf.write(out, np.concatenate(parts)[: int(seconds * sr)], sr, subtype="PCM_16")
    return out


def measure_app(bundle: str | None, work: Path, clips: list[Path], *, quick: bool) -> tuple[dict, list[str]]:
    """Cold start, round trips and peak memory of ``python app.py``; notes on anything not measured."""
    from gradio_client import handle_file

    reps = 10 if quick else 40
    clip = handle_file(str(clips[0]))
    notes: list[str] = []
    extra: dict[str, float] = {}

    log.info("starting the app once to warm its caches")
    with app_server(work, bundle=bundle) as server:
        server.wait_until_serving()
        loopback_client(server.url).predict(clip, api_name="/score")

    log.info("starting the app again: cold start with warm caches")
    with app_server(work, bundle=bundle) as server:
        server.wait_until_serving()
        client = loopback_client(server.url)  # pictures stay on the server: a browser fetches them itself
        client.predict(clip, api_name="/score")
        cold_start = time.monotonic() - server.started

        log.info("round trips: %d each of /score, /analyze, %s", reps, NOOP_ENDPOINT)
        score = timings_ms(lambda: client.predict(clip, api_name="/score"), reps)
        analyze = timings_ms(lambda: client.predict(clip, True, api_name="/analyze"), reps)
        try:
            noop: float | None = float(
                np.median(timings_ms(lambda: client.predict(api_name=NOOP_ENDPOINT), reps))
            )
        except ValueError as exc:  # gradio_client: "Cannot find a function with api_name ..."
            noop = None
            notes.append(
                f"{NOOP_ENDPOINT} not measured ({str(exc).splitlines()[0][:80]}): the app needs a hidden no-op "
                f'endpoint, e.g. gr.api(lambda: "ok", api_name="ping", api_visibility="undocumented")'
            )
        # The same through plain HTTP on one kept-alive connection: what the server itself costs.
        # gradio_client polls for the answer every 50 ms (gradio_client/utils.py), which alone sets a
        # floor of about 50 ms on every round trip it makes.
        import httpx

        with httpx.Client(base_url=server.url, timeout=60) as http:
            extra["api_score_http_ms_p50"] = float(
                np.median(timings_ms(lambda: http_call(http, "score", [http_upload(http, clips[0])]), reps))
            )
            if noop is not None:
                extra["api_noop_http_ms_p50"] = float(
                    np.median(timings_ms(lambda: http_call(http, NOOP_ENDPOINT, []), reps))
                )
        log.info("one full batch of 100 clips, for the memory peak")
        client.predict([handle_file(str(c)) for c in clips[:100]], api_name="/batch")
        rss = server.memory_mb("VmHWM")
        log.info("a batch of 100 recordings of 120 s (the longest accepted), for the memory peak")
        long_clip = long_recording(clips, work / "long_120s.wav")
        client.predict([handle_file(str(long_clip))] * 100, api_name="/batch")
        extra["batch_120s_rss_mb"] = server.memory_mb("VmHWM")
    numbers = {
        "api_score_ms_p50": float(np.median(score)),
        "api_analyze_ms_p50": float(np.median(analyze)),
        "api_noop_ms_p50": noop,
        "cold_start_s": cold_start,
        "rss_mb": rss,
        **extra,
    }
    return numbers, notes


# --- reporting ------------------------------------------------------------------------------------------


def verdict(key: str, value: float | None) -> str:
    op, limit, _, _ = TARGETS[key]
    if limit is None:
        return ""
    if value is None:
        return "not measured"
    ok = value <= limit if op == "<=" else value >= limit
    return "pass" if ok else "MISS"


def format_table(numbers: dict, breakdown: dict[str, float], notes: list[str], *, quick: bool) -> str:
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpus = os.cpu_count() or 1
    lines = [
        f"gearbox sound check benchmark{' (--quick)' if quick else ''}: {cpus} CPUs, load average "
        f"{load1:.1f} at the end" + (" (busy machine: timings are noisy)" if load1 > 0.5 * cpus else ""),
        "",
        f"{'metric':22s} {'value':>10s}  {'target':>14s}  {'':12s}  what",
    ]
    for key, (op, limit, unit, what) in TARGETS.items():
        value = numbers.get(key)
        shown = "null" if value is None else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
        target = f"{op} {limit:g} {unit}" if limit is not None else unit
        lines.append(f"{key:22s} {shown:>10s}  {target:>14s}  {verdict(key, value):12s}  {what}")
    if breakdown:
        total = sum(breakdown.values())
        lines += ["", "where the core path's time goes (median ms per step, one 10 s clip):"]
        for name, ms in breakdown.items():
            lines.append(f"  {name:28s} {ms:7.2f}  {100 * ms / total:5.1f} %")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def run_benchmark(args: argparse.Namespace) -> int:
    """The ``bench`` command: measure, print the table and, with ``--json``, a last line of JSON."""
    quick = bool(getattr(args, "quick", False))
    bundle = getattr(args, "bundle", None)
    numbers: dict = dict.fromkeys(JSON_KEYS)
    breakdown: dict[str, float] = {}
    notes: list[str] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="gearbox-bench-") as tmp:
        work = Path(tmp)
        from anomaly.features import FeatureParams

        sr = FeatureParams().sr
        if bundle:
            from anomaly.bundle import read_config

            sr = FeatureParams.from_dict(read_config(bundle)["preprocessing"]).sr
        log.info("writing synthetic clips to %s", work)
        clips = synth_clips(work / "clips", 6 if quick else 20, 200, sr)

        engine, breakdown = measure_engine(bundle, clips, quick=quick)
        numbers.update(engine)
        numbers.update(measure_live(bundle, quick=quick))
        try:
            app, notes = measure_app(bundle, work / "app", clips, quick=quick)
            numbers.update(app)
        except Exception as exc:  # the engine numbers still stand; say what went wrong
            failed = True
            notes.append(f"app not measured: {str(exc).strip()[:2000]}")
    if numbers["core_ms_p50"] and numbers["mel_floor_ms_p50"]:
        numbers["core_vs_mel_floor"] = numbers["core_ms_p50"] / numbers["mel_floor_ms_p50"]
    print(format_table(numbers, breakdown, notes, quick=quick))
    if getattr(args, "json", False):
        print(json.dumps({k: None if numbers[k] is None else round(float(numbers[k]), 3) for k in JSON_KEYS}))
    return 1 if failed else 0
