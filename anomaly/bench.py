"""Speed and memory on this machine: ``python -m anomaly bench [--json] [--quick] [--bundle DIR]``.

Every number is a median over repetitions after a warm-up, on synthetic clips written to a temporary
folder (``anomaly.synth``):

core_ms_p50, core_ms_p95
    One 10 s clip through ``Detector.analyze``: decode, log-mel, encoder, score (in this process).
mel_floor_ms_p50
    Decode and log-mel alone (``log_mel_file``): the part of the core path no model change can remove.
batch_clips_per_s
    200 clips through ``Detector.analyze_many`` (threaded decoding, the network in large batches).
adapted_score_ms_p50, calibrate_10_s
    After adapting (``Detector.calibrate`` on 10 clips, with the default reference recipe): one 10 s clip
    through ``Detector.analyze`` (decode, log-mel, the reference's blocks at every resolution, score), and
    the calibration itself.
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
archive_files_per_s_1, archive_files_per_s_2, archive_speedup
    ``score-archive`` (``anomaly.archive``) over 2,000 files of 10 s (400 with ``--quick``) on a local
    Dask cluster of 1, then 2 worker processes of one thread each: files per second from the first task
    to the last row, after each worker has loaded its model; the speed-up is the second over the first.
archive_worker_rss_mb
    Peak resident memory (``VmHWM``) of the largest worker process over both runs.

``--only`` measures some of these parts (engine, live, app, archive) and leaves the others null.

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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from anomaly.measure import measure_app, process_memory_mb, timings_ms

log = logging.getLogger("anomaly")

NOOP_ENDPOINT = "/ping"

# metric -> (comparison, limit, unit, what it is)
TARGETS: dict[str, tuple[str, float | None, str, str]] = {
    "core_ms_p50": ("<=", 15.0, "ms", "one 10 s clip: decode + log-mel + encoder + score"),
    "core_ms_p95": ("", None, "ms", "the same, 95th percentile"),
    "mel_floor_ms_p50": ("", None, "ms", "decode + log-mel alone"),
    "core_vs_mel_floor": ("<=", 2.5, "x", "core p50 / log-mel floor p50"),
    "batch_clips_per_s": (">=", 200.0, "clips/s", "200 clips through analyze_many"),
    "adapted_score_ms_p50": ("<=", 10.0, "ms", "one 10 s clip against a 10-clip calibration"),
    "calibrate_10_s": ("<=", 2.0, "s", "calibrate on 10 clips of 10 s (decode included)"),
    "api_score_ms_p50": ("<=", 60.0, "ms", "/score through gradio_client"),
    "api_analyze_ms_p50": ("<=", 200.0, "ms", "/analyze (with pictures) through gradio_client"),
    "api_noop_ms_p50": ("", None, "ms", f"{NOOP_ENDPOINT}: the HTTP floor"),
    "api_analyze_over_noop_ms": ("<=", 60.0, "ms", "/analyze minus the HTTP floor: its work and pictures"),
    "api_score_http_ms_p50": ("", None, "ms", "/score through plain HTTP, one kept-alive connection"),
    "api_noop_http_ms_p50": ("", None, "ms", f"{NOOP_ENDPOINT} through plain HTTP: the server's floor"),
    "cold_start_s": ("<=", 10.0, "s", "start of python app.py to the first /score answer"),
    "rss_mb": ("<=", 1200.0, "MB", "peak resident memory of the app (VmHWM)"),
    "batch_120s_rss_mb": ("<=", 1200.0, "MB", "the same after a /batch of 100 recordings of 120 s"),
    "live_update_ms_p50": ("<=", 100.0, "ms", "listen live: 1 s chunk -> score of the last 2 s + pictures"),
    "live_score_ms_p50": ("", None, "ms", "the same without the pictures"),
    "live_rss_drift_mb": ("<=", 50.0, "MB", "resident memory over 600 live updates (10 min of audio)"),
    "archive_files_per_s_1": ("", None, "files/s", "score-archive of 10 s files, 1 local worker process"),
    "archive_files_per_s_2": ("", None, "files/s", "the same, 2 worker processes"),
    "archive_speedup": (">=", 1.6, "x", "2 workers / 1 worker"),
    "archive_worker_rss_mb": ("<=", 1200.0, "MB", "peak resident memory of a worker process (VmHWM)"),
}
SECTIONS = ("engine", "live", "app", "archive")
ARCHIVE_FILES = 2000
JSON_KEYS = [
    "core_ms_p50",
    "core_ms_p95",
    "mel_floor_ms_p50",
    "batch_clips_per_s",
    "adapted_score_ms_p50",
    "calibrate_10_s",
    "api_score_ms_p50",
    "api_analyze_ms_p50",
    "api_noop_ms_p50",
    "cold_start_s",
    "rss_mb",
    "batch_120s_rss_mb",
    "live_update_ms_p50",
    "live_rss_drift_mb",
    "archive_files_per_s_1",
    "archive_files_per_s_2",
    "archive_speedup",
    "archive_worker_rss_mb",
]


# --- measuring ---------------------------------------------------------------------------------------------


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
    """Median milliseconds of each step of ``Detector.analyze`` on one clip, with the bundle's own scorer."""
    from anomaly.decoding import load_audio
    from anomaly.embedding import raw_features, standardize
    from anomaly.features import log_mel, min_seconds, windows

    params = detector.params
    scorer = detector.scorer  # the bundled model's WindowScorer: the bench loads no calibration
    y = load_audio(clip, params.sr, min_seconds=min_seconds(params))
    spec = log_mel(y, params)
    w = windows(spec, params)
    x = scorer.model_input(w)
    enc = scorer.encode(x)
    emb = standardize(raw_features(scorer.recipe, w, enc), detector.bundle.arrays)
    steps: dict[str, Callable[[], object]] = {
        "decode (load_audio)": lambda: load_audio(clip, params.sr, min_seconds=min_seconds(params)),
        "log-mel": lambda: log_mel(y, params),
        "band check + windows": lambda: detector.hear(detector.as_sound(spec), name=clip.name),
        f"encoder ({len(w)} windows)": lambda: scorer.encode(x),
        "embedding blocks": lambda: standardize(raw_features(scorer.recipe, w, enc), detector.bundle.arrays),
        "score + decision": lambda: detector.decide(
            float(scorer.mahalanobis.score_samples(emb).max()), scorer.shape(spec)
        ),
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
    normals = [c for i, c in enumerate(clips[: 15 if quick else 20]) if i % 3 != 2][:10]
    calibrate_s = timings_ms(lambda: detector.calibrate(normals), 3 if quick else 5, warmup=1) / 1000.0
    adapted = detector.with_calibration(detector.calibrate(normals))
    adapted_ms = timings_ms(lambda: adapted.analyze(clip), reps, warmup=5)
    numbers = {
        "adapted_score_ms_p50": float(np.median(adapted_ms)),
        "calibrate_10_s": float(np.median(calibrate_s)),
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

    from anomaly.charts import live_timeline
    from anomaly.detector import Detector
    from anomaly.gauge import gauge_html
    from anomaly.live import LiveSession
    from anomaly.synth import synthesize_clip
    from anomaly.waveform import resample

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
            gauge_html(session.last.score, t, familiar=session.last.familiar)
            starts, scores = session.timeline()
            live_timeline(starts, scores, t, session.window_s, now_s=session.heard_s)

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


def measure_archive(bundle: str | None, clips: list[Path], work: Path) -> tuple[dict, list[str]]:
    """``score-archive`` over ``clips`` on local clusters of 1 and 2 single-threaded worker processes; the
    numbers, and a note of the workers' CPU time per file and the load (a busy machine lends no second
    core, whatever the code does)."""
    from anomaly import archive
    from anomaly.locate import find_bundle

    loaded = find_bundle(bundle)
    model = archive.model_sha256(loaded)
    root = clips[0].parent
    numbers: dict = {}
    peaks, seen = [], []
    for workers in (1, 2):
        with archive.dask_client(None, workers=workers, dashboard=False) as client:
            client.run(archive.warm_up_worker, str(loaded.path), model, str(clips[0]))
            log.info("archive: %d files on %d worker process(es)", len(clips), workers)
            cpu_before = sum(client.run(archive.worker_cpu_s).values())
            summary = archive.score_archive(root, work / f"scores_{workers}.parquet", client, bundle=loaded)
            cpu = sum(client.run(archive.worker_cpu_s).values()) - cpu_before
            peaks.extend(v for v in client.run(archive.worker_peak_rss_mb).values() if v is not None)
        if summary.rows != len(clips) or summary.errors:
            raise RuntimeError(f"the archive run scored {summary.rows} rows with {summary.errors} errors")
        numbers[f"archive_files_per_s_{workers}"] = summary.files_per_s
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        seen.append(f"{workers} worker(s) {1000 * cpu / len(clips):.1f} ms (load average {load1:.1f})")
    numbers["archive_speedup"] = numbers["archive_files_per_s_2"] / numbers["archive_files_per_s_1"]
    numbers["archive_worker_rss_mb"] = max(peaks) if peaks else None
    return numbers, [f"archive: worker CPU time per file: {', '.join(seen)}"]


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
    sections = set(getattr(args, "only", None) or SECTIONS)
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
        # 15 distinct clips at least: 10 of them normal, to calibrate on (copies would be one recording).
        clips = synth_clips(work / "clips", 15 if quick else 20, 200, sr)

        if "engine" in sections:
            engine, breakdown = measure_engine(bundle, clips, quick=quick)
            numbers.update(engine)
        if "live" in sections:
            numbers.update(measure_live(bundle, quick=quick))
        if "app" in sections:
            try:
                app, app_notes = measure_app(bundle, work / "app", clips, quick=quick)
                numbers.update(app)
                notes += app_notes
            except Exception as exc:  # the engine numbers still stand; say what went wrong
                failed = True
                notes.append(f"app not measured: {str(exc).strip()[:2000]}")
        if "archive" in sections:
            n_files = ARCHIVE_FILES // 5 if quick else ARCHIVE_FILES
            log.info("writing %d synthetic 10 s files for the archive", n_files)
            archive_clips = synth_clips(work / "archive", 20, n_files, sr)
            try:
                archive_numbers, archive_notes = measure_archive(bundle, archive_clips, work)
                numbers.update(archive_numbers)
                notes += archive_notes
                notes.append(
                    f"archive: {n_files} files of 10 s; 100,000 such files take about "
                    + ", ".join(
                        f"{100_000 / numbers[f'archive_files_per_s_{w}'] / 60:.0f} min on {w} worker(s)"
                        for w in (1, 2)
                    )
                    + " here"
                )
            except Exception as exc:
                failed = True
                notes.append(f"archive not measured: {str(exc).strip()[:2000]}")
    if numbers["core_ms_p50"] and numbers["mel_floor_ms_p50"]:
        numbers["core_vs_mel_floor"] = numbers["core_ms_p50"] / numbers["mel_floor_ms_p50"]
    if numbers["api_analyze_ms_p50"] is not None and numbers["api_noop_ms_p50"] is not None:
        numbers["api_analyze_over_noop_ms"] = numbers["api_analyze_ms_p50"] - numbers["api_noop_ms_p50"]
    print(format_table(numbers, breakdown, notes, quick=quick))
    if getattr(args, "json", False):
        print(json.dumps({k: None if numbers[k] is None else round(float(numbers[k]), 3) for k in JSON_KEYS}))
    return 1 if failed else 0
