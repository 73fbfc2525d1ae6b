"""Gearbox Sound Check: the Gradio app (a Hugging Face Space).

Layout and wiring only: the engine (``anomaly.detector``) scores recordings and ``anomaly.plots`` draws the
pictures. The model loads once, at import, through ``Detector.load()``: env ``ANOMALY_BUNDLE`` (a local
bundle folder), else the Hub repo in ``ANOMALY_HUB_REPO`` pinned by ``ANOMALY_HUB_REVISION``, else the
bundled ``artifacts/``. Each visitor's calibration and hand-set thresholds live in ``gr.State``, so they
affect nobody else.

Public API (also served as MCP tools): ``/analyze``, ``/analyze_spectrogram``, ``/score`` and ``/batch``.
Run locally with ``python app.py``; the server binds to ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL.Image import DecompressionBombError

from anomaly import plots
from anomaly.bundle import Calibration
from anomaly.detector import MIN_CALIBRATION_CLIPS, ROUGH_CALIBRATION_CLIPS, Analysis, Detector
from anomaly.errors import AudioInputError, BundleError
from anomaly.features import AUDIO_EXTENSIONS
from anomaly.live import LiveReading, LiveSession

log = logging.getLogger("anomaly.app")
if __name__ == "__main__":  # run as the server: say what happens at start-up (model, warm-up, examples)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
TITLE = "Gearbox Sound Check"

# Serving limits for a 2-vCPU Space: what one request may cost.
MAX_SECONDS = 120.0  # longest recording scored (the model was trained on 10 s clips)
MAX_FILE_SIZE = "50mb"  # enforced by gradio on every upload
MAX_BATCH_FILES = 100
MAX_CALIBRATION_FILES = 200
# Uploads and generated files are deleted this long after they were made (checked every CACHE_SWEEP_S).
CACHE_SWEEP_S, CACHE_MAX_AGE_S = 300, 900

BATCH_COLUMNS = ["file", "score", "percentile", "label", "error"]
# What the upload boxes offer: any file the browser calls audio, plus the extensions it may not (WebM is
# often "video/webm"). gr.Audio takes audio/* and audio/webm already.
AUDIO_FILE_TYPES = ["audio", *AUDIO_EXTENSIONS]
AUDIO_FORMATS_SHORT = "WAV, FLAC, OGG, MP3, M4A, WebM"


# --- the model, loaded once -----------------------------------------------------------------------------


def load_detector() -> tuple[Detector, str]:
    """The shared detector and one sentence on which model was loaded and why (the bundle says it)."""
    detector = Detector.load()
    return detector, detector.bundle.reason or f"model: {detector.model_info['source']}"


def warm_up(detector: Detector) -> float:
    """Run every path once (decode, log-mel, both compiled networks, all three pictures) so that tracing
    the tf.functions, librosa's first calls and matplotlib's font cache are paid before the first visitor."""
    import soundfile as sf

    from anomaly.synth import synthesize_clip

    started = time.perf_counter()
    seconds = max(3.0, 1.5 * detector.params.window_seconds)
    wave, _ = synthesize_clip("source", "normal", 0, duration_s=seconds, sr=detector.params.sr)
    buffer = io.BytesIO()
    sf.write(buffer, wave, detector.params.sr, format="WAV", subtype="PCM_16")
    explained = detector.analyze(buffer.getvalue(), name="warm-up.wav", explain=True)
    detector.analyze(buffer.getvalue(), name="warm-up.wav")
    _pictures(explained, detector, show_map=True)
    # Listening live: a browser's 48 kHz through the resampler, and the rolling timeline's fixed range.
    live = LiveSession(detector.params)
    live.feed(np.repeat(wave, 3), 3 * detector.params.sr, detector)
    plots.live_timeline(*live.timeline(), detector.thresholds, live.window_s, now_s=live.heard_s)
    return time.perf_counter() - started


# --- per-visitor settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """What one visitor changed: a calibration on their own clips and thresholds set by hand."""

    calibration: Calibration | None = None
    manual: tuple[float, float] | None = None


def detector_for(session: Session | None) -> Detector:
    """The shared detector with this visitor's calibration and thresholds (cheap: the model is shared)."""
    if session is None:
        return DETECTOR
    detector = DETECTOR.with_calibration(session.calibration) if session.calibration else DETECTOR
    return detector.with_thresholds(*session.manual) if session.manual else detector


def base_detector(session: Session | None) -> Detector:
    """This visitor's detector before hand-set thresholds: what "reset" goes back to."""
    return detector_for(Session(calibration=session.calibration) if session else None)


def redact(text: str, paths: Sequence[str | Path] = ()) -> str:
    """A message without the server's temporary folders: an upload is shown by its own file name."""
    for path in paths:
        text = text.replace(str(path), Path(path).name)
    return text


def refuse(message: str, title: str = "Cannot use this input") -> gr.Error:
    """The error for input we cannot use: one line in the server's log, the message to the visitor.

    gradio would print a traceback for every ``gr.Error`` (``print_exception``); a refused upload is not
    a fault of the server, so the log gets the message alone. The page, gradio_client's ``AppError`` and
    the MCP tool result carry the same text.
    """
    log.info("refused: %s", message)
    return gr.Error(message, title=title, print_exception=False)


@contextmanager
def user_errors(doing: str, paths: Sequence[str | Path] = ()) -> Iterator[None]:
    """Turn our exceptions into ``gr.Error`` with their message; log anything else and say so briefly.

    gradio shows a ``gr.Error`` on the page and gradio_client raises it as ``AppError`` with the same text;
    any other exception would reach the visitor as a bare "error", so it is logged here with its traceback.
    """
    try:
        yield
    except gr.Error:
        raise
    except (AudioInputError, BundleError) as exc:
        raise refuse(redact(str(exc), paths)) from None
    except Exception:
        log.exception("unexpected error while %s", doing)  # the one traceback, here
        raise gr.Error(
            f"Something went wrong while {doing}. The error was logged; please try again or use another file.",
            title="Internal error",
            print_exception=False,
        ) from None


def tolerate_unreadable_images(component: gr.Image) -> gr.Image:
    """Let a file PIL cannot open through to the handler instead of failing inside gradio.

    ``gr.Image`` opens every upload before the handler runs and would answer a broken or non-image file,
    or a decompression bomb, with a bare "error"; the engine's ``image_to_log_mel`` says which file and
    what is wrong with it. (An instance attribute rather than a subclass: gradio writes a ``.pyi`` stub
    next to any module that defines a component class.)
    """
    preprocess = component.preprocess

    def tolerant(payload):
        try:
            return preprocess(payload)
        except (OSError, DecompressionBombError):  # unreadable, truncated, or beyond PIL's pixel limit
            if payload is None or not getattr(payload, "path", None):
                raise
            return str(payload.path)

    component.preprocess = tolerant
    return component


# --- presentation ----------------------------------------------------------------------------------------


def _pictures(
    analysis: Analysis, detector: Detector, *, show_map: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    spectrogram = plots.spectrogram_picture(
        analysis.log_mel,
        detector.params,
        analysis.anomaly_map if show_map else None,
    )
    gauge = plots.score_gauge(analysis.score, analysis.thresholds)
    timeline = plots.window_timeline(
        analysis.window_times_s,
        analysis.window_scores,
        analysis.thresholds,
        analysis.window_seconds or detector.params.window_seconds,
    )
    return spectrogram, gauge, timeline


def model_line(detector: Detector) -> str:
    """Which model (and calibration) produced a result, for the details and the header."""
    info = detector.model_info
    where = {
        "hub": f"Hub {info['repo_id']} @ {str(info['revision'])[:7]}",
        "hub-cache": f"cached copy of Hub {info['repo_id']} @ {str(info['revision'])[:7]}",
        "bundled": "the bundled model",
        "local": f"local bundle {detector.bundle.path.name}/",
    }.get(info["source"], str(info["source"]))
    if info["calibration"]:
        where += f", calibrated on {info['calibration']['n_clips']} of your clips"
    return where


def header_model_text() -> str:
    """Which model is loaded; the full reason when the Hub was asked for and not used."""
    info = DETECTOR.model_info
    if info["source"] == "bundled" and not info["repo_id"]:
        created = str(DETECTOR.bundle.config.get("created", ""))[:10]
        return f"Model: the bundled model{f' (built {created})' if created else ''}."
    warn = "⚠️ " if info["source"] != "hub" and info["repo_id"] else ""
    return f"{warn}Model: {model_line(DETECTOR)}. {MODEL_MESSAGE[:1].upper() + MODEL_MESSAGE[1:]}."


def thresholds_text(detector: Detector) -> str:
    """The thresholds in force and where they come from."""
    t = detector.thresholds
    if t.method == "manual":
        how = "set by hand"
    elif detector.calibration is not None:
        how = "from your calibration"
    elif t.method == "lognormal prediction bound":
        how = "from your calibration"
    else:
        how = "calibrated on held-out normal clips"
    quantiles = (
        f" (gamma fit, {t.maintenance_quantile:g} / {t.severe_quantile:g} quantiles)"
        if t.method == "gamma" and t.maintenance_quantile
        else ""
    )
    return f"maintenance from **{t.maintenance:.2f}**, severe from **{t.severe:.2f}**, {how}{quantiles}"


def details_markdown(analysis: Analysis, detector: Detector) -> str:
    """The numbers behind a decision, for people."""
    n_normals = len(detector.normal_scores)
    windows = len(analysis.window_scores)
    worst = float(analysis.window_times_s[int(np.argmax(analysis.window_scores))]) if windows else 0.0
    adapted = detector.reference is not None
    normals_word = (
        f"{n_normals} normal recordings you calibrated on (each scored without itself)"
        if adapted
        else f"{n_normals} held-out normal clips"
    )
    rows = [
        ("Compared with", analysis.compared_with),
        ("Score", f"{analysis.score:.2f}, higher than {analysis.percentile:.0f}% of the {normals_word}"),
        ("Thresholds", thresholds_text(detector)),
        (
            "Windows",
            f"{windows} piece(s) of {analysis.window_seconds:.1f} s; "
            f"the clip's score is the highest (the piece starting at {worst:.1f} s)",
        ),
        ("Length", f"{analysis.duration_s:.1f} s"),
        ("Model", model_line(detector)),
        ("Processing time", f"{analysis.elapsed_ms:.0f} ms"),
    ]
    if analysis.departures:
        rows.insert(
            2,
            (
                "Where it departs from your normal recordings",
                ", ".join(f"{d['db']:+.0f} dB around {_hz(d['hz'])}" for d in analysis.departures),
            ),
        )
    for note in analysis.notes:
        rows.append(("Note", note))
    heading = f"#### {analysis.file}: {analysis.label}"
    if not analysis.familiar:
        heading = f"#### {analysis.file}: unfamiliar machine, adapt first\n\n{analysis.advice}"
    return heading + "\n" + "\n".join(f"- **{k}:** {v}" for k, v in rows)


def _hz(hz: float) -> str:
    return f"{hz / 1000:.1f} kHz" if hz >= 1000 else f"{hz:.0f} Hz"


def _view(analysis: Analysis, detector: Detector, show_map: bool) -> tuple:
    spectrogram, gauge, timeline = _pictures(analysis, detector, show_map=show_map)
    verdict = analysis.label if analysis.familiar else UNFAMILIAR_VERDICT
    return spectrogram, gauge, verdict, details_markdown(analysis, detector), timeline


UNFAMILIAR_VERDICT = "Unfamiliar machine: adapt first"


def _no_view() -> tuple:
    return (gr.skip(),) * 5


def _redecide(analysis: Analysis, detector: Detector) -> Analysis:
    """The same scores under other thresholds: no model run."""
    return replace(
        analysis,
        label=detector.thresholds.label(analysis.score),
        thresholds=detector.thresholds,
        model=detector.model_info,
    )


def _rescore(analysis: Analysis, detector: Detector) -> Analysis:
    """The same recording under another calibration: the network runs again on the kept log-mel."""
    return detector.analyze_log_mel(analysis.log_mel, name=analysis.file, explain=True)


def adapt_summary(analysis: Analysis | None, detector: Detector) -> str:
    """The thresholds in force and what they make of the last recording."""
    lines = [f"Thresholds now: {thresholds_text(detector)}."]
    if analysis is None:
        lines.append("Analyze a recording first to see the effect of these settings on it.")
    else:
        lines.append(
            f"Last recording, **{analysis.file}**: score {analysis.score:.2f} "
            f"(higher than {analysis.percentile:.0f}% of the reference normal clips) -> **{analysis.label}**."
        )
    return "\n\n".join(lines)


# --- the shared model and scratch space -----------------------------------------------------------------


def cap_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX=2`` does (an explicit setting of it wins).

    glibc gives each new thread its own arena and keeps what is freed in it; gradio runs handlers on a pool
    of threads, so under concurrent requests resident memory grew by about 110 MB in a load test and kept
    creeping. With 2 arenas it stays flat, at no cost in latency.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX
    except (OSError, AttributeError):  # not Linux with glibc: nothing to cap
        pass


cap_malloc_arenas()
try:
    DETECTOR, MODEL_MESSAGE = load_detector()
except BundleError as exc:
    # A missing or damaged model is the operator's problem to fix: one clear line, not a stack trace.
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(1) from None
log.info("%s; warm-up took %.1f s", MODEL_MESSAGE, warm_up(DETECTOR))

# Files we hand out for download (calibration, CSV) live here; gradio copies them into its own cache,
# which delete_cache sweeps, and old ones are pruned here on every write.
OUTPUT_DIR = tempfile.TemporaryDirectory(prefix="gearbox-sound-check-")


def output_path(filename: str) -> Path:
    """A fresh path for a downloadable file, in its own folder so that it keeps a readable name."""
    root = Path(OUTPUT_DIR.name)
    cutoff = time.time() - CACHE_MAX_AGE_S
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request pruned it first
            pass
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder / filename


# --- public endpoints -----------------------------------------------------------------------------------


def analyze(
    audio: str | None, show_anomaly_map: bool = True, session: Session | None = None
) -> tuple[np.ndarray, np.ndarray, str, str, np.ndarray, Analysis]:
    """Check one gearbox recording: is it NORMAL, does it NEED MAINTENANCE, or is it a SEVERE ANOMALY?

    Args:
        audio: a recording (WAV, FLAC, OGG Vorbis/Opus, MP3, M4A/AAC or WebM/Opus; mono or stereo, any
            sample rate up to 384 kHz; at most 120 s and 50 MB).
        show_anomaly_map: draw where the recording departs from normal over the spectrogram.

    Returns:
        the spectrogram picture, the score gauge, the label, details (Markdown) and the score of every
        2-second window over time.
    """
    if not audio:
        raise refuse("Upload or record a gearbox recording first.", title="No recording")
    detector = detector_for(session)
    with user_errors("analysing the recording", [audio]):
        analysis = detector.analyze(audio, explain=True, max_seconds=MAX_SECONDS)
        return (*_view(analysis, detector, show_anomaly_map), analysis)


def analyze_spectrogram(
    image: str | None, show_anomaly_map: bool = True, session: Session | None = None
) -> tuple[np.ndarray, np.ndarray, str, str, np.ndarray, Analysis]:
    """Check a spectrogram image instead of a recording.

    The image must follow the model's convention: an 8-bit grayscale PNG with one row per mel band
    (128 rows, lowest frequency at the bottom), one column per frame (time to the right, at least 64
    columns), pixel value p meaning -100 + p / 255 * 120 dB. Colour-mapped pictures are refused.

    Args:
        image: the spectrogram image.
        show_anomaly_map: draw where the spectrogram departs from normal over it.

    Returns:
        the spectrogram picture, the score gauge, the label, details (Markdown) and the score of every
        2-second window over time.
    """
    if not image:
        raise refuse("Upload a spectrogram image first.", title="No image")
    detector = detector_for(session)
    with user_errors("analysing the spectrogram image", [image]):
        analysis = detector.analyze_image(image, name=Path(image).name, explain=True, max_seconds=MAX_SECONDS)
        return (*_view(analysis, detector, show_anomaly_map), analysis)


def score(audio: str | None, session: Session | None = None) -> dict:
    """Score one gearbox recording and return plain JSON (fast: no pictures, no anomaly map).

    Args:
        audio: a recording (WAV, FLAC, OGG, MP3, M4A/AAC or WebM; at most 120 s and 50 MB).

    Returns:
        a dict with file, score, label (NORMAL, NEEDS MAINTENANCE or SEVERE ANOMALY), percentile (share in %
        of held-out normal clips scoring lower), thresholds {maintenance, severe}, windows [{start_s,
        score}] and model {source, revision, repo_id, calibration}.
    """
    if not audio:
        raise refuse("Upload or record a gearbox recording first.", title="No recording")
    with user_errors("scoring the recording", [audio]):
        return detector_for(session).analyze(audio, max_seconds=MAX_SECONDS).to_json()


def ping() -> str:
    """Does nothing: the HTTP round-trip floor for benchmarks and a cheap health check."""
    return "ok"


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A CSV cell a spreadsheet shows as text: a single quote before a leading = + - @, tab or carriage
    return, as OWASP recommends (a file named ``=HYPERLINK(...)+1.wav`` would otherwise run). Numbers
    such as -1.5 are left as they are."""
    if not isinstance(cell, str) or not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell


def batch(
    files: list[str] | None,
    session: Session | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects it
) -> tuple[pd.DataFrame, str]:
    """Score many recordings at once; a file that cannot be scored becomes a row with its error.

    Args:
        files: the recordings (at most 100 per batch; each at most 120 s and 50 MB).

    Returns:
        a table with one row per file (file, score, percentile, label, error) and the same table as CSV
        (where a cell that a spreadsheet would run as a formula starts with a single quote).
    """
    if not files:
        raise refuse("Choose one or more recordings first.", title="No files")
    if len(files) > MAX_BATCH_FILES:
        raise refuse(
            f"{len(files)} files: at most {MAX_BATCH_FILES} can be scored at once.", title="Too many"
        )
    detector = detector_for(session)
    names = [Path(f).name for f in files]

    def report(done: int, total: int) -> None:
        progress(done / total, desc=f"reading {done}/{total}")

    with user_errors("scoring the batch", files):
        progress(0.0, desc="reading recordings")
        results = detector.analyze_many(files, names=names, progress=report, max_seconds=MAX_SECONDS)
        rows = []
        for result in results:
            if isinstance(result, AudioInputError):
                rows.append([result.source, None, None, None, redact(result.problem, files)])
            else:
                rows.append(
                    [result.file, round(result.score, 4), round(result.percentile, 1), result.label, ""]
                )
        table = pd.DataFrame(rows, columns=BATCH_COLUMNS).astype(object)
        path = output_path("scores.csv")
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(BATCH_COLUMNS)
            writer.writerows(["" if v is None else spreadsheet_safe(v) for v in row] for row in rows)
        return table.where(table.notna(), None), str(path)


# --- private events: display, thresholds, calibration ----------------------------------------------------


def analyze_example(audio: str) -> tuple[np.ndarray, np.ndarray, str, str, np.ndarray]:
    """An example clip with the model's own settings (what gets cached)."""
    return analyze(audio, True, None)[:5]


def refresh_after_example(audio: str | None, show_map: bool, session: Session | None) -> tuple:
    """After a cached example is shown: remember its analysis, and redo it if this visitor changed settings."""
    if not audio:
        return (*_no_view(), None)
    detector = detector_for(session)
    with user_errors("analysing the example", [audio]):
        analysis = detector.analyze(audio, explain=True, max_seconds=MAX_SECONDS)
    if session is None or (session.calibration is None and session.manual is None):
        return (*_no_view(), analysis)
    return (*_view(analysis, detector, show_map), analysis)


def redraw_spectrogram(show_map: bool, last: Analysis | None) -> np.ndarray:
    """The last spectrogram with or without the anomaly map (no model run)."""
    if last is None:
        return gr.skip()
    return plots.spectrogram_picture(last.log_mel, DETECTOR.params, last.anomaly_map if show_map else None)


def _after_change(session: Session, last: Analysis | None, show_map: bool, *, rescore: bool) -> tuple:
    """Outputs shared by every settings change: the analysis views, the adapt tab's label and summary."""
    detector = detector_for(session)
    if last is not None:
        last = _rescore(last, detector) if rescore else _redecide(last, detector)
        view = _view(last, detector, show_map)
        if not rescore:
            view = (gr.skip(), *view[1:])
    else:
        view = _no_view()
    adapt_label = last.label if last is not None else gr.skip()
    return (*view, last, adapt_label, adapt_summary(last, detector))


def set_thresholds(
    maintenance: float, severe: float, show_map: bool, session: Session | None, last: Analysis | None
) -> tuple:
    """Thresholds set by hand for this visitor; the last recording's verdict follows at once."""
    if maintenance is None or severe is None:
        return (gr.skip(),) * 9
    if not 0 <= maintenance < severe:
        gr.Warning("The maintenance threshold must be below the severe threshold.")
        return (gr.skip(),) * 9
    session = session or Session()
    base = base_detector(session).thresholds
    same = abs(maintenance - base.maintenance) < 1e-6 and abs(severe - base.severe) < 1e-6
    session = replace(session, manual=None if same else (float(maintenance), float(severe)))
    return (session, *_after_change(session, last, show_map, rescore=False))


def _slider_updates(detector: Detector, analysis: Analysis | None) -> tuple:
    """Both sliders at the detector's thresholds, with room above the last score."""
    t = detector.thresholds
    top = max(3.0 * t.severe, 1.2 * analysis.score if analysis is not None else 0.0)
    top = float(np.ceil(top))
    return gr.Slider(value=round(t.maintenance, 2), maximum=top), gr.Slider(
        value=round(t.severe, 2), maximum=top
    )


def reset_thresholds(show_map: bool, session: Session | None, last: Analysis | None) -> tuple:
    """Back to the calibrated thresholds (the model's or the visitor's calibration)."""
    session = replace(session or Session(), manual=None)
    return (
        session,
        *_slider_updates(detector_for(session), last),
        *_after_change(session, last, show_map, rescore=False),
    )


def _calibration_outputs(
    session: Session, last: Analysis | None, show_map: bool, status: str, download: str | None
) -> tuple:
    detector = detector_for(session)
    return (
        session,
        status,
        download,
        *_slider_updates(detector, last),
        *_after_change(session, last, show_map, rescore=True),
    )


def calibration_status(calibration: Calibration, source: str) -> str:
    """How many clips were used, which were skipped, the new thresholds, and a warning when rough."""
    meta = calibration.meta
    t = calibration.thresholds
    lines = [
        f"**Calibrated {source} on {calibration.n_clips} normal clip(s)** "
        f"(created {meta.get('created', '?')}). New thresholds: maintenance from **{t.maintenance:.2f}**, "
        f"severe from **{t.severe:.2f}**. They apply to this browser session only. (The anomaly map still "
        "compares with the sounds the model was trained on; calibration changes the score and the thresholds.)",
    ]
    if meta.get("skipped"):
        lines.append(f"Skipped (not usable): {', '.join(meta['skipped'])}.")
    if meta.get("rough"):
        lines.append(
            f"⚠️ **Rough calibration:** fewer than {ROUGH_CALIBRATION_CLIPS} clips give only a rough guess of "
            "the normal spread. Add more normal recordings for reliable thresholds."
        )
    return "\n\n".join(lines)


def calibrate(
    files: list[str] | None,
    show_map: bool,
    session: Session | None,
    last: Analysis | None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects progress through the default
) -> tuple:
    """Refit scorer and thresholds on the visitor's normal clips, for this session only; offer the file."""
    if not files:
        raise refuse(
            f"Upload at least {MIN_CALIBRATION_CLIPS} normal recordings of your machine "
            f"({ROUGH_CALIBRATION_CLIPS} or more for reliable thresholds).",
            title="No recordings",
        )
    if len(files) > MAX_CALIBRATION_FILES:
        raise refuse(f"At most {MAX_CALIBRATION_FILES} recordings can be used for one calibration.")

    def report(done: int, total: int) -> None:
        progress(done / total, desc=f"embedding {done}/{total}")

    with user_errors("calibrating", files):
        calibration = DETECTOR.calibrate(files, progress=report, max_seconds=MAX_SECONDS)
        path = calibration.save(output_path("calibration.npz"))
        session = Session(calibration=calibration)
        status = calibration_status(calibration, "here")
        return _calibration_outputs(session, last, show_map, status, str(path))


def load_calibration_file(
    file: str | None, show_map: bool, session: Session | None, last: Analysis | None
) -> tuple:
    """Use a calibration file saved earlier (refused unless it was made with this model)."""
    if not file:
        return (gr.skip(),) * 14
    with user_errors("reading the calibration file", [file]):
        calibration = DETECTOR.load_calibration(file)
        session = Session(calibration=calibration)
        status = calibration_status(calibration, f"from {Path(file).name}")
        return _calibration_outputs(session, last, show_map, status, None)


def forget_calibration(show_map: bool, session: Session | None, last: Analysis | None) -> tuple:
    """Drop the visitor's calibration and hand-set thresholds."""
    session = Session()
    status = "Back to the model's own calibration and thresholds."
    return _calibration_outputs(session, last, show_map, status, None)


def show_adapt_summary(last: Analysis | None, session: Session | None) -> tuple:
    """The Adapt tab's copy of the last verdict."""
    if last is None:
        return gr.skip(), gr.skip()
    return last.label, adapt_summary(last, detector_for(session))


def label_colour(label: dict | str | None) -> gr.Label:
    """Green, amber or red behind the verdict."""
    text = label.get("label") if isinstance(label, dict) else label
    return gr.Label(color=plots.LABEL_COLOURS.get(text or "", None))


# --- listening live ---------------------------------------------------------------------------------------

# How often the browser's microphone chunks reach the server; a reading is made every second of audio
# whatever the chunk size, so this only bounds how late a reading can be (half a second at most).
LIVE_STREAM_EVERY_S = 0.5
NO_MICROPHONE = "No microphone: allow it in the browser, or upload a recording"


# Microphone set-up for listening to a machine, in every getUserMedia call of the page: echo cancellation,
# noise suppression and automatic gain are off, because a machine's steady sound is exactly what noise
# suppression removes and its level is a cue that automatic gain evens out. When the browser refuses the
# microphone (no device, permission denied, or a page not served over HTTPS), the live tab says so plainly.
LIVE_HEAD = """
<script>
(() => {
  const message = NO_MICROPHONE_JSON;
  function show(reason) {
    const box = document.getElementById("live-mic-problem");
    if (!box) { setTimeout(() => show(reason), 500); return; }
    box.textContent = message + (reason ? " (" + reason + ")." : ".");
    box.hidden = false;
  }
  function hide() {
    const box = document.getElementById("live-mic-problem");
    if (box) box.hidden = true;
  }
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) {
    show(window.isSecureContext ? "this browser cannot record" : "the page is not served over HTTPS");
    return;
  }
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : { ...constraints.audio };
      Object.assign(audio, { echoCancellation: false, noiseSuppression: false, autoGainControl: false });
      constraints = { ...constraints, audio };
    }
    try {
      const stream = await original(constraints);
      hide();
      return stream;
    } catch (error) {
      const why = { NotAllowedError: "permission denied", NotFoundError: "no microphone found",
                    NotReadableError: "the microphone is busy" }[error && error.name];
      show(why || (error && error.name) || "");
      throw error;
    }
  };
})();
</script>
""".replace("NO_MICROPHONE_JSON", json.dumps(NO_MICROPHONE))


def live_pictures(live: LiveSession, detector: Detector) -> tuple[np.ndarray | None, np.ndarray]:
    """The gauge at the last score (None before the first) and the rolling timeline of the last minute."""
    t = detector.thresholds
    gauge = plots.score_gauge(live.last.score, t) if live.last and live.last.score is not None else None
    starts, scores = live.timeline()
    timeline = plots.live_timeline(
        starts, scores, t, live.window_s, now_s=live.heard_s, span_s=live.history_s
    )
    return gauge, timeline


def live_verdict(reading: LiveReading | None) -> str:
    """What the verdict box says: the label, or in a few words what is wrong with the sound."""
    if reading is None:
        return "Waiting for the microphone…"
    if reading.problem is not None:
        return reading.problem.split(":")[0].rstrip(".")
    return reading.label if reading.familiar else UNFAMILIAR_VERDICT


def live_status(live: LiveSession, elapsed_ms: float | None = None) -> str:
    """One line on what is happening, with the full text of any problem."""
    r = live.last
    heard = f"Listening: {live.heard_s:.0f} s heard."
    if r is None:
        return f"Waiting for sound from the microphone; the first verdict comes {live.window_s:.1f} s after it starts."
    if r.problem is not None:
        return f"{heard} ⚠️ {r.problem}"
    line = f"{heard} Last {live.window_s:.1f} s: score **{r.score:.2f}** -> **{r.label}**"
    if not r.familiar:
        line += " (this sound is unlike anything the model learned: adapt it to your machine first)"
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


def listen_start(session: Session | None) -> dict:
    """A new listening session: empty history, the last summary and downloads cleared."""
    live = LiveSession(DETECTOR.params)
    _, timeline = live_pictures(live, detector_for(session))  # empty, with the thresholds drawn
    return {
        live_state: live,
        live_label: live_verdict(None),
        live_timeline: timeline,
        live_status_out: live_status(live),
        live_alarms_out: live_alarms(live),
        live_summary_out: "",
        live_csv_out: gr.File(value=None, visible=False),
        live_worst_out: gr.File(value=None, visible=False),
    }


def listen(chunk: tuple[int, np.ndarray] | None, live: LiveSession | None, session: Session | None) -> dict:
    """One chunk of the microphone stream; every new second of audio, the last 2 s are scored.

    Bad chunks (empty, silent, NaN) never stop the stream: the verdict says what is wrong.
    """
    if live is None or (live.stopped_at is not None and time.time() - live.stopped_at > 2.0):
        live = LiveSession(DETECTOR.params)  # start_recording did not arrive first, or a new recording
    if live.stopped_at is not None:
        return {live_state: live}  # a chunk that was on its way when Stop was pressed
    started = time.perf_counter()
    detector = detector_for(session)
    sr, data = chunk if chunk is not None else (None, None)
    try:
        readings = live.feed(data, sr, detector)
        if not readings:
            return {live_state: live}
        out = {live_state: live, live_label: live_verdict(live.last), live_alarms_out: live_alarms(live)}
        if any(r.score is not None for r in readings):
            gauge, timeline = live_pictures(live, detector)
            out |= {live_gauge: gauge if gauge is not None else gr.skip(), live_timeline: timeline}
    except Exception:  # a stream must survive anything one chunk does; the log keeps the traceback
        log.exception("unexpected error while listening")
        return {live_state: live, live_label: "Internal error: see the server log", live_status_out: ""}
    out[live_status_out] = live_status(live, (time.perf_counter() - started) * 1000.0)
    return out


def listen_stop(live: LiveSession | None, session: Session | None) -> dict:
    """Stop: time at each level, the worst moment, and downloads of the readings (CSV) and the worst 10 s."""
    if live is None:
        return {live_summary_out: "Nothing was heard: press Record and allow the microphone."}
    live.stop()
    return {
        live_state: live,
        live_summary_out: live_summary(live),
        live_csv_out: gr.File(value=live_csv_file(live), visible=bool(live.log)),
        live_worst_out: gr.File(value=live_worst_file(live), visible=live.worst_clip is not None),
        live_status_out: f"Stopped after {live.heard_s:.0f} s of listening.",
    }


def live_summary(live: LiveSession) -> str:
    """The stop summary, for people."""
    facts = live.summary()
    if not facts["readings"]:
        return (
            f"#### Summary\nNothing was scored: {live.heard_s:.1f} s were heard, and the first verdict needs "
            f"{live.window_s:.1f} s."
        )
    total = sum(facts["seconds_at"].values()) or 1.0
    rows = [
        f"| {level} | {seconds:.0f} s | {100 * seconds / total:.0f} % |"
        for level, seconds in facts["seconds_at"].items()
    ]
    lines = [
        "#### Summary",
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


def live_csv_file(live: LiveSession) -> str | None:
    if not live.log:
        return None
    path = output_path("live-readings.csv")
    path.write_text(live.csv_text())
    return str(path)


def live_worst_file(live: LiveSession) -> str | None:
    if live.worst_clip is None:
        return None
    import soundfile as sf

    sr, clip = live.worst_clip
    path = output_path("worst-10s.wav")
    sf.write(path, np.clip(clip, -1.0, 1.0), sr, subtype="PCM_16")
    return str(path)


def live_label_colour(label: dict | str | None) -> gr.Label:
    """The live verdict's colour: the label's, or grey while listening or when the sound is unusable."""
    text = label.get("label") if isinstance(label, dict) else label
    return gr.Label(color=plots.LABEL_COLOURS.get(text or "", plots.MUTED))


# --- examples and their cache ----------------------------------------------------------------------------


def example_files() -> list[Path]:
    """The bundled example clips, normal ones first."""
    return sorted(EXAMPLES_DIR.glob("*.wav"), key=lambda p: (not p.stem.startswith("normal"), p.stem))


def example_label(path: Path) -> str:
    stem = path.stem
    if stem.startswith("normal_"):
        return f"normal ({stem.removeprefix('normal_')} domain)"
    if stem.startswith("fault_"):
        return f"fault: {stem.removeprefix('fault_')}"
    return stem


def _examples_cache_key(files: list[Path]) -> str:
    """Cached example outputs are only valid for this model, these clips and this drawing code."""
    digest = hashlib.sha256()
    digest.update(json.dumps(DETECTOR.bundle.config.get("files", {}), sort_keys=True).encode())
    digest.update(json.dumps(DETECTOR.thresholds.to_dict(), sort_keys=True).encode())
    for path in (Path(__file__), Path(plots.__file__), *files):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


EXAMPLES = example_files()
if EXAMPLES:
    # gradio reuses a cache folder by component id; key it by model and code so that a new bundle or a new
    # drawing never shows stale results. Absolute, so that the working directory does not matter.
    _cache_root = Path(os.environ.get("GRADIO_EXAMPLES_CACHE") or APP_DIR / ".gradio" / "cached_examples")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(_cache_root.resolve() / _examples_cache_key(EXAMPLES))

# MCP tool calls have no browser session: they get the model's own settings, which is what we want.
warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")


# --- layout -----------------------------------------------------------------------------------------------

CSS = """
.gradio-container { max-width: 1180px !important; margin: auto; }
#header h1 { margin-bottom: 0.1em; }
#header p { margin: 0.15em 0; }
#synthetic-note { color: var(--body-text-color-subdued); font-size: 0.95em; }
#model-line { color: var(--body-text-color-subdued); font-size: 0.85em; }
.hint { color: var(--body-text-color-subdued); font-size: 0.85em; }
#label-output .output-class, #adapt-label .output-class, #live-label .output-class { color: white; font-size: 1.6em; }
#live-mic-box:has(#live-mic-problem[hidden]) { display: none; }
#live-mic-problem { background: #d64541; color: white; padding: 0.6em 0.9em; border-radius: 6px; font-weight: 600; }
#details-output table { font-size: 0.92em; }
footer { margin-top: 1em; }
"""

THEME = gr.themes.Soft(primary_hue="teal", secondary_hue="slate", neutral_hue="slate")


def training_note() -> str:
    """One plain line under the title on what the model learned from."""
    training = DETECTOR.bundle.config.get("training") or {}
    if training.get("synthetic"):
        return (
            "The model was trained on this project's own **synthetic gearbox sounds**, not on recordings of "
            "real machines: calibrate it on your own normal recordings in the *Adapt* tab before relying on it."
        )
    return (
        f"The model was trained on {training.get('data', 'data not described in its bundle')}; calibrate it "
        "on your own normal recordings in the *Adapt* tab before relying on it."
    )


def about_markdown() -> str:
    config = DETECTOR.bundle.config
    params = DETECTOR.params
    training = config.get("training") or {}
    t = DETECTOR.thresholds
    metrics = config.get("metrics") or {}
    metric_lines = [
        f"- {domain}: AUC {entry['auc']:.3f}, pAUC {entry['pauc']:.3f}"
        for domain, entry in metrics.items()
        if isinstance(entry, dict) and "auc" in entry
    ] or ["- Not evaluated on a labelled test set yet (`python -m anomaly evaluate ... --record`)."]
    blocks = (config.get("embedding") or {}).get("recipe") or ["encoder"]
    recipe = ", ".join(f"`{b}`" for b in ([blocks] if isinstance(blocks, str) else blocks))
    if metrics.get("test_set"):
        metric_lines.insert(0, f"- Test set: {metrics['test_set']}")
    if training.get("synthetic"):
        trained_on = (
            "**Synthetic data only.** This model was trained on the project's own synthetic gearbox sounds "
            "(simulated shaft and gear-mesh harmonics, sidebands, motor hum, room and factory background at "
            "several speeds and loads), **not on recordings of a real machine**. It shows the method; before "
            "you trust its labels on your machine, calibrate it on a handful of your own normal recordings "
            "in the *Adapt* tab."
        )
    else:
        trained_on = f"Training data: {training.get('data', 'not recorded in the bundle')}."
    facts = [
        f"- Training clips: {training.get('n_clips', '?')} normal clips ({training.get('data', '?')}), "
        f"seed {training.get('seed', '?')}, {training.get('epochs', '?')} epochs",
        f"- {header_model_text()}",
        f"- Built: {config.get('created', '?')}",
        *metric_lines,
    ]
    return f"""
## What the model is

An **unsupervised anomalous sound detector** for gearboxes, in the style of DCASE Task 2 (machine condition
monitoring). It learned only what *normal* sounds like and scores how far a new recording is from that.

audio -> log-mel spectrogram ({params.sr / 1000:g} kHz, {params.n_mels} mel bands) -> one embedding per
{params.window_seconds:.0f}-second window ({recipe}; `encoder_*` are features learned by a convolutional
autoencoder, `logmel_*` per-band level statistics) -> PCA -> Mahalanobis distance to the nearest reference
domain, in units of that domain's typical normal window (1.0 = a typical normal sound) -> clip score (the
highest window) -> label. The thresholds are not
hand-picked: they are quantiles of a gamma distribution fitted to the scores of held-out normal clips
(maintenance from {t.maintenance:.2f}, severe from {t.severe:.2f} for this model). The decoder draws the
anomaly map: where in time and frequency the sound is reconstructed worse than normal sounds are.

## What it was trained on

{trained_on}

{chr(10).join(facts)}

## Train and publish your own model

```bash
python -m anomaly synth corpus/ --seed 0 --train 1000 --test 100      # or your own DCASE-style folder
python -m anomaly train corpus/ --out my_bundle/ --synthetic          # learns from corpus/train/ normals
python -m anomaly evaluate corpus/test/ --bundle my_bundle/ --record "synthetic test set, seed 0"
python -m anomaly publish my_bundle/ --repo-id YOUR_USER/gearbox-sound-check-model   # needs HF_TOKEN
```

`publish` prints the commit URL; its last part is the commit sha. Point the Space at it in
*Settings -> Variables* (or your own server, in its environment), pinned so that a later upload cannot change
the model under you:

```bash
ANOMALY_HUB_REPO=YOUR_USER/gearbox-sound-check-model ANOMALY_HUB_REVISION=<commit sha or tag> python app.py
```

Every file is checked against the sha256 sums in the bundle's `config.json`; if the Hub cannot be reached the
cached copy is used, and if nothing verifies the bundled model is used. The header says which one is loaded.
For a local folder, set `ANOMALY_BUNDLE=/path/to/bundle` instead.

## Use it from code

```python
from gradio_client import Client, handle_file

client = Client("YOUR_USER/gearbox-sound-check")  # or "http://127.0.0.1:7860"
result = client.predict(handle_file("recording.wav"), api_name="/score")
print(result["label"], result["score"], result["percentile"])

table, csv_path = client.predict([handle_file("a.wav"), handle_file("b.wav")], api_name="/batch")
```

Endpoints: `/analyze` (recording -> spectrogram, gauge, label, details, window timeline), `/analyze_spectrogram`
(spectrogram image -> the same), `/score` (recording -> JSON) and `/batch` (recordings -> table and CSV). The
same functions are served as MCP tools at `/gradio_api/mcp/`. Limits: {MAX_SECONDS:g} s per recording,
{MAX_FILE_SIZE.upper().replace("MB", " MB")} per file, {MAX_BATCH_FILES} files per batch.
Uploads are not kept: they are deleted within {CACHE_MAX_AGE_S // 60 + CACHE_SWEEP_S // 60} minutes.
"""


with gr.Blocks(title=TITLE, delete_cache=(CACHE_SWEEP_S, CACHE_MAX_AGE_S)) as demo:
    # Per visitor; gradio drops both when the tab closes. The last analysis holds the log-mel and the map
    # (a few MB for a long recording), so it also expires after an hour of inactivity.
    session_state = gr.State(None)
    last_state = gr.State(None, time_to_live=3600)

    gr.Markdown(
        f"# {TITLE}\n"
        "Listen to a gearbox recording and tell whether it sounds **normal**, **needs maintenance** or is a "
        "**severe anomaly**, and see where in time and frequency it departs from normal.",
        elem_id="header",
    )
    gr.Markdown(
        training_note(),
        elem_id="synthetic-note",
    )
    gr.Markdown(header_model_text(), elem_id="model-line")

    with gr.Tabs():
        with gr.Tab("Analyze", id="analyze"):
            # Outputs first (rendered below), so that the examples next to the input can name them.
            label_out = gr.Label(label="Verdict", elem_id="label-output", render=False)
            gauge_out = gr.Image(
                label="Score and thresholds",
                type="numpy",
                format="png",
                interactive=False,
                elem_id="gauge-output",
                render=False,
            )
            spectrogram_out = gr.Image(
                label="Spectrogram (cyan: departs from normal)",
                type="numpy",
                format="png",
                interactive=False,
                elem_id="spectrogram-output",
                render=False,
            )
            timeline_out = gr.Image(
                label="Score over time (each bar: one scored piece of the recording)",
                type="numpy",
                format="png",
                interactive=False,
                elem_id="timeline-output",
                render=False,
            )
            details_out = gr.Markdown(elem_id="details-output", container=True, padding=True, render=False)
            view_outputs = [spectrogram_out, gauge_out, label_out, details_out, timeline_out]
            examples = None
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    with gr.Tabs():
                        with gr.Tab("Recording", id="recording"):
                            audio_in = gr.Audio(
                                sources=["upload", "microphone"],
                                type="filepath",
                                label=f"Recording (up to {MAX_SECONDS:g} s; {AUDIO_FORMATS_SHORT})",
                                elem_id="audio-input",
                            )
                            analyze_btn = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
                            if EXAMPLES:
                                examples = gr.Examples(
                                    examples=[[str(p)] for p in EXAMPLES],
                                    example_labels=[example_label(p) for p in EXAMPLES],
                                    inputs=[audio_in],
                                    outputs=view_outputs,
                                    fn=analyze_example,
                                    cache_examples=True,
                                    preload=False,
                                    label="Synthetic examples: click one",
                                    elem_id="examples",
                                )
                        with gr.Tab("Spectrogram image", id="image"):
                            image_in = tolerate_unreadable_images(
                                gr.Image(
                                    type="filepath",
                                    image_mode=None,
                                    sources=["upload"],
                                    label="Spectrogram PNG",
                                    elem_id="image-input",
                                )
                            )
                            analyze_image_btn = gr.Button(
                                "Analyze image", variant="primary", elem_id="analyze-image-button"
                            )
                            gr.Markdown(
                                f"8-bit grayscale, one row per mel band ({DETECTOR.params.n_mels} rows, lowest "
                                "frequency at the bottom), one column per frame (at least "
                                f"{DETECTOR.params.window_frames}); pixel value p means "
                                f"{DETECTOR.params.db_min:g} + p/255 x "
                                f"{DETECTOR.params.db_max - DETECTOR.params.db_min:g} dB. The spectrogram "
                                "picture this app draws is colour-mapped and cannot be scored again.",
                                elem_classes=["hint"],
                            )
                    label_out.render()
                    gauge_out.render()
                with gr.Column(scale=7):
                    spectrogram_out.render()
                    show_map = gr.Checkbox(
                        value=True, label="Show where it departs from normal", elem_id="show-map"
                    )
                    timeline_out.render()
                    details_out.render()
            with gr.Accordion("Raw result as JSON (the /score endpoint)", open=False):
                score_btn = gr.Button("Score as JSON", size="sm", elem_id="score-button")
                score_out = gr.JSON(label="/score", elem_id="score-output")

        with gr.Tab("Listen live", id="live"):
            # One listening session per visitor: the ring of recent audio and the bounded history.
            live_state = gr.State(None, time_to_live=3600)
            gr.Markdown(
                "Hold the phone or laptop near the running gearbox and press **Record**: every second the last "
                f"{LiveSession(DETECTOR.params).window_s:.0f} s are scored against the model (or your calibration "
                "from the *Adapt* tab). **Stop** gives a summary, the readings as CSV and the worst 10 s as a "
                "recording. The browser asks for the microphone first (on Spaces the page is HTTPS, so it can); "
                "no microphone? Allow it in the browser, or upload a recording on the *Analyze* tab.",
                elem_id="live-mic-note",
                elem_classes=["hint"],
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    live_in = gr.Audio(
                        sources=["microphone"],
                        type="numpy",
                        streaming=True,
                        label="Microphone",
                        elem_id="live-input",
                    )
                    # Filled and shown by LIVE_HEAD's script when the browser refuses the microphone.
                    gr.HTML('<div id="live-mic-problem" hidden></div>', elem_id="live-mic-box")
                    live_label = gr.Label(label="Verdict, live", elem_id="live-label")
                    live_gauge = gr.Image(
                        label="Score now, and thresholds",
                        show_label=False,
                        type="numpy",
                        format="png",
                        interactive=False,
                        elem_id="live-gauge",
                    )
                with gr.Column(scale=7):
                    gr.Markdown(
                        "**The last minute:** score of each 2-second window", elem_classes=["caption"]
                    )
                    live_timeline = gr.Image(
                        label="The last minute: score of each 2-second window",
                        show_label=False,
                        type="numpy",
                        format="png",
                        interactive=False,
                        elem_id="live-timeline",
                    )
                    live_status_out = gr.Markdown(elem_id="live-status")
                    live_alarms_out = gr.Markdown(elem_id="live-alarms")
                    live_summary_out = gr.Markdown(elem_id="live-summary")
                    with gr.Row():
                        live_csv_out = gr.File(
                            label="Readings (CSV)", height=90, visible=False, elem_id="live-csv"
                        )
                        live_worst_out = gr.File(
                            label="The worst 10 s (WAV)", height=90, visible=False, elem_id="live-worst"
                        )

        with gr.Tab("Batch", id="batch"):
            gr.Markdown(
                f"Score up to {MAX_BATCH_FILES} recordings at once. A file that cannot be read becomes a row "
                "with its error; the rest are scored."
            )
            batch_in = gr.File(
                file_count="multiple",
                file_types=AUDIO_FILE_TYPES,
                label=f"Recordings ({AUDIO_FORMATS_SHORT})",
                elem_id="batch-input",
            )
            batch_btn = gr.Button("Score all", variant="primary", elem_id="batch-button")
            batch_table = gr.Dataframe(
                headers=BATCH_COLUMNS,
                datatype=["str", "number", "number", "str", "str"],
                label="Results",
                interactive=False,
                wrap=True,
                column_widths=["24%", "11%", "11%", "19%", "35%"],
                elem_id="batch-table",
            )
            batch_csv = gr.File(label="Download as CSV", elem_id="batch-csv")

        with gr.Tab("Adapt", id="adapt"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    gr.Markdown(
                        "### Calibrate on your machine\n"
                        f"Upload a handful of **normal** recordings of your own gearbox (at least "
                        f"{MIN_CALIBRATION_CLIPS}; {ROUGH_CALIBRATION_CLIPS} or more for reliable thresholds). "
                        "The scorer and thresholds are refitted on them for this browser session only; "
                        "other visitors are not affected. Download the calibration to use it again later.\n\n"
                        "**Record every clip from the same spot, with the same gain and distance**: the overall "
                        "loudness is one of the things compared, so moving the phone or turning the gain up "
                        "reads as a change of the machine."
                    )
                    calibration_in = gr.File(
                        file_count="multiple",
                        file_types=AUDIO_FILE_TYPES,
                        label="Normal recordings of your machine",
                        elem_id="calibration-input",
                    )
                    with gr.Row():
                        calibrate_btn = gr.Button("Calibrate", variant="primary", elem_id="calibrate-button")
                        forget_btn = gr.Button("Back to the model's calibration", elem_id="forget-button")
                    calibration_status_out = gr.Markdown(elem_id="calibration-status")
                    with gr.Row():
                        calibration_file_out = gr.File(
                            label="Your calibration file", height=120, elem_id="calibration-file"
                        )
                        calibration_upload = gr.File(
                            file_count="single",
                            file_types=[".npz"],
                            label="Load a calibration file saved earlier",
                            height=120,
                            elem_id="calibration-upload",
                        )
                with gr.Column(scale=2):
                    gr.Markdown(
                        "### Thresholds by hand\nMove a slider: the last recording's verdict follows at once."
                    )
                    t0 = DETECTOR.thresholds
                    slider_top = float(np.ceil(3 * t0.severe))
                    maintenance_in = gr.Slider(
                        0.0,
                        slider_top,
                        value=round(t0.maintenance, 2),
                        step=0.01,
                        label="NEEDS MAINTENANCE from score",
                        elem_id="maintenance-slider",
                    )
                    severe_in = gr.Slider(
                        0.0,
                        slider_top,
                        value=round(t0.severe, 2),
                        step=0.01,
                        label="SEVERE ANOMALY from score",
                        elem_id="severe-slider",
                    )
                    reset_btn = gr.Button("Reset to the calibrated thresholds", elem_id="reset-button")
                    adapt_label = gr.Label(label="Last recording, with these settings", elem_id="adapt-label")
                    adapt_text = gr.Markdown(adapt_summary(None, DETECTOR), elem_id="adapt-summary")

        with gr.Tab("About", id="about"):
            gr.Markdown(about_markdown(), elem_id="about")

    after_change = [*view_outputs, last_state, adapt_label, adapt_text]

    analyze_btn.click(
        analyze,
        inputs=[audio_in, show_map, session_state],
        outputs=[*view_outputs, last_state],
        api_name="analyze",
    ).success(
        show_adapt_summary,
        inputs=[last_state, session_state],
        outputs=[adapt_label, adapt_text],
        api_visibility="private",
        queue=False,
    )
    analyze_image_btn.click(
        analyze_spectrogram,
        inputs=[image_in, show_map, session_state],
        outputs=[*view_outputs, last_state],
        api_name="analyze_spectrogram",
    ).success(
        show_adapt_summary,
        inputs=[last_state, session_state],
        outputs=[adapt_label, adapt_text],
        api_visibility="private",
        queue=False,
    )
    score_btn.click(score, inputs=[audio_in, session_state], outputs=[score_out], api_name="score")
    gr.api(ping, api_name="ping", api_visibility="undocumented")
    batch_btn.click(
        batch,
        inputs=[batch_in, session_state],
        outputs=[batch_table, batch_csv],
        api_name="batch",
        concurrency_limit=1,
        concurrency_id="heavy",
    )
    if examples is not None:
        examples.cache_event.then(
            refresh_after_example,
            inputs=[audio_in, show_map, session_state],
            outputs=[*view_outputs, last_state],
            api_visibility="private",
        ).success(
            show_adapt_summary,
            inputs=[last_state, session_state],
            outputs=[adapt_label, adapt_text],
            api_visibility="private",
            queue=False,
        )
    show_map.change(
        redraw_spectrogram,
        inputs=[show_map, last_state],
        outputs=[spectrogram_out],
        api_visibility="private",
    )
    for slider in (maintenance_in, severe_in):
        slider.input(
            set_thresholds,
            inputs=[maintenance_in, severe_in, show_map, session_state, last_state],
            outputs=[session_state, *after_change],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress="hidden",
        )
    reset_btn.click(
        reset_thresholds,
        inputs=[show_map, session_state, last_state],
        outputs=[session_state, maintenance_in, severe_in, *after_change],
        api_visibility="private",
    )
    calibration_outputs = [
        session_state,
        calibration_status_out,
        calibration_file_out,
        maintenance_in,
        severe_in,
        *after_change,
    ]
    calibrate_btn.click(
        calibrate,
        inputs=[calibration_in, show_map, session_state, last_state],
        outputs=calibration_outputs,
        api_visibility="private",
        concurrency_limit=1,
        concurrency_id="heavy",
    )
    calibration_upload.upload(
        load_calibration_file,
        inputs=[calibration_upload, show_map, session_state, last_state],
        outputs=calibration_outputs,
        api_visibility="private",
    )
    forget_btn.click(
        forget_calibration,
        inputs=[show_map, session_state, last_state],
        outputs=calibration_outputs,
        api_visibility="private",
    )
    live_in.start_recording(
        listen_start,
        inputs=[session_state],
        outputs=[
            live_state,
            live_label,
            live_status_out,
            live_alarms_out,
            live_summary_out,
            live_csv_out,
            live_worst_out,
        ],
        api_visibility="private",
        queue=False,
    )
    live_in.stream(
        listen,
        inputs=[live_in, live_state, session_state],
        outputs=[live_state, live_label, live_gauge, live_timeline, live_status_out, live_alarms_out],
        api_visibility="private",
        stream_every=LIVE_STREAM_EVERY_S,
        show_progress="hidden",
        trigger_mode="multiple",
    )
    live_in.stop_recording(
        listen_stop,
        inputs=[live_state, session_state],
        outputs=[live_state, live_summary_out, live_csv_out, live_worst_out, live_status_out],
        api_visibility="private",
    )
    live_label.change(
        live_label_colour,
        inputs=[live_label],
        outputs=[live_label],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    for verdict in (label_out, adapt_label):
        verdict.change(
            label_colour,
            inputs=[verdict],
            outputs=[verdict],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )

demo.queue(default_concurrency_limit=2, max_size=32)


if __name__ == "__main__":
    # No server_name / server_port: gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Spaces sets them).
    demo.launch(
        max_file_size=MAX_FILE_SIZE,
        mcp_server=True,
        theme=THEME,
        css=CSS,
        head=LIVE_HEAD,
        footer_links=["api", "gradio", "settings"],
        allowed_paths=[str(EXAMPLES_DIR)],
    )
