"""What the page shows, as pure functions: an ``Analysis`` (or a calibration, or a batch) in, Markdown, HTML
or pictures out. Nothing here runs the model or touches gradio.

Words are for a maintenance engineer: "your 10 normal recordings", not "held-out clips"; "the demo gearbox",
not "source domain".
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from anomaly import card, plots
from anomaly.analysis import readable_time
from anomaly.calibration import Calibration
from anomaly.charts import window_timeline
from anomaly.detector import MIN_CALIBRATION_CLIPS, ROUGH_CALIBRATION_CLIPS, Analysis, Detector
from anomaly.features import FeatureParams
from anomaly.gauge import gauge_html
from anomaly.scoring import LABELS, UNFAMILIAR, Thresholds
from anomaly.spectrogram_plot import spectrogram_picture
from anomaly.ui.limits import CACHE_MAX_AGE_S, CACHE_SWEEP_S, MAX_BATCH_FILES, MAX_FILE_SIZE, MAX_SECONDS

UNFAMILIAR_VERDICT = "Unfamiliar machine: adapt first"
AUDIO_FORMATS_SHORT = "WAV, FLAC, OGG, MP3, M4A, WebM"
FAULT_NAMES = {
    "tooth": "a chipped gear tooth",
    "wear": "worn gear teeth",
    "bearing": "a damaged bearing",
    "imbalance": "an unbalanced shaft",
    "lubrication": "poor lubrication",
}


# --- the verdict -----------------------------------------------------------------------------------------


def verdict(analysis: Analysis) -> str:
    """The words in the verdict box: the label, or the neutral unfamiliar state."""
    return UNFAMILIAR_VERDICT if analysis.label == UNFAMILIAR else analysis.label


def verdict_colour(text: str | None) -> str:
    """Green, amber or red for the three labels; grey for anything else (unfamiliar, an error, waiting)."""
    return plots.LABEL_COLOURS.get(text or "", plots.MUTED)


def compared_with(analysis: Analysis) -> str:
    """One line under the verdict: what the recording was compared with."""
    line = f"**Compared with** {plain_text(analysis.compared_with)}."
    if not analysis.familiar:
        line += f"\n\n{analysis.advice}"
    if analysis.caution:
        line += f"\n\n⚠️ {analysis.caution}"
    return line


def score_meaning(thresholds: Thresholds) -> str:
    """The sentence under the gauge."""
    return (
        "The score says how far this recording is from normal: about 1 is what a normal recording of the "
        f"machine it was compared with scores. From {thresholds.maintenance:.2f} it needs maintenance, from "
        f"{thresholds.severe:.2f} it is a severe anomaly."
    )


def neutral(analysis: Analysis | None) -> bool:
    """Whether the pictures of ``analysis`` must be neutral: its verdict is UNFAMILIAR, so its score says
    nothing about the machine's health. (Against a user's reference an unfamiliar sound keeps its severity,
    and its pictures their colours.)"""
    return analysis is not None and analysis.label == UNFAMILIAR


def gauge(analysis: Analysis | None, thresholds: Thresholds) -> str:
    """The score gauge (HTML) with the sentence that explains it."""
    score = analysis.score if analysis is not None else None
    familiar = not neutral(analysis)
    meaning = f'<p class="gauge-note">{html.escape(score_meaning(thresholds))}</p>'
    return gauge_html(score, thresholds, familiar=familiar) + meaning


def spectrogram(analysis: Analysis, params: FeatureParams, *, show_map: bool) -> np.ndarray:
    """The spectrogram, with the anomaly map over it when asked; never for an unfamiliar verdict, whose
    departures from a model of another machine would all look like faults."""
    departures = analysis.anomaly_map if show_map and not neutral(analysis) else None
    return spectrogram_picture(analysis.log_mel, params, departures)


def timeline(analysis: Analysis, params: FeatureParams) -> np.ndarray:
    """The score of each scored piece over time, with the thresholds the analysis was decided by."""
    return window_timeline(
        analysis.window_times_s,
        analysis.window_scores,
        analysis.thresholds,
        analysis.window_seconds or params.window_seconds,
        familiar=not neutral(analysis),
    )


# --- the numbers behind a verdict ------------------------------------------------------------------------


def _one_in(quantile: float | None) -> str | None:
    return f"1 in {round(1 / (1 - quantile)):,}" if quantile and 0 < quantile < 1 else None


def thresholds_text(detector: Detector) -> str:
    """The thresholds in force and where they come from, in plain words."""
    t = detector.thresholds
    head = f"needs maintenance from **{t.maintenance:.2f}**, severe from **{t.severe:.2f}**"
    if t.method == "manual":
        return f"{head}, set by hand"
    n = len(detector.normal_scores)
    whose = (
        f"your {n} normal recordings" if detector.calibration is not None else f"{n} normal demo recordings"
    )
    maintenance, severe = _one_in(t.maintenance_quantile), _one_in(t.severe_quantile)
    if maintenance and severe:
        return (
            f"{head}, set from {whose} so that about {maintenance} normal recordings reach maintenance "
            f"and {severe} reach severe"
        )
    return f"{head}, set from {whose}"


def percentile_text(analysis: Analysis, detector: Detector) -> str:
    n = len(detector.normal_scores)
    if detector.calibration is not None:
        normals = f"your {n} normal recordings (each compared with the others)"
    else:
        normals = f"{n} normal recordings of the demo gearbox that the model did not learn from"
    return f"{analysis.score:.2f}, higher than {analysis.percentile:.0f}% of {normals}"


def hz_text(hz: float) -> str:
    return f"{hz / 1000:.1f} kHz" if hz >= 1000 else f"{hz:.0f} Hz"


def model_line(detector: Detector) -> str:
    """Which model produced a result (the calibration is named in the banner and the details)."""
    info = detector.model_info
    revision = str(info.get("revision") or "")[:7]
    return {
        "hub": f"Hub {info['repo_id']} @ {revision}",
        "hub-cache": f"cached copy of Hub {info['repo_id']} @ {revision}",
        "bundled": "the bundled demo model",
        "local": f"local bundle {detector.bundle.path.name}/",
    }.get(info["source"], str(info["source"]))


def details(analysis: Analysis, detector: Detector) -> str:
    """The numbers behind a decision, for people."""
    windows = len(analysis.window_scores)
    worst = float(analysis.window_times_s[int(np.argmax(analysis.window_scores))]) if windows else 0.0
    rows = [
        ("Compared with", plain_text(analysis.compared_with)),
        ("Score", percentile_text(analysis, detector)),
        ("Thresholds", thresholds_text(detector)),
        (
            "Pieces scored",
            f"{windows} piece(s) of {analysis.window_seconds:.1f} s; the recording's score is the highest "
            f"(the piece starting at {worst:.1f} s)",
        ),
        ("Length", f"{analysis.duration_s:.1f} s"),
        ("Model", model_line(detector)),
        ("Processing time", f"{analysis.elapsed_ms:.0f} ms"),
    ]
    if analysis.departures:
        where = ", ".join(f"{d['db']:+.0f} dB around {hz_text(d['hz'])}" for d in analysis.departures)
        rows.insert(2, ("Where it departs from your normal recordings", where))
    rows += [("Note", note) for note in analysis.notes]
    heading = f"#### {escape_markdown(analysis.file)}: {verdict(analysis)}"
    return heading + "\n" + "\n".join(f"- **{k}:** {v}" for k, v in rows)


def error_details(message: str) -> str:
    return f"#### ⚠️ Not analysed\n{escape_markdown(message)}"


def escape_markdown(text: str) -> str:
    """User-supplied text (a file name, a message naming one) shown as itself in Markdown, not as markup."""
    escaped = html.escape(str(text))
    for mark in "*`[]":  # "_" inside a word is literal; no link without its brackets
        escaped = escaped.replace(mark, "\\" + mark)
    return escaped


# Every ASCII punctuation mark that Markdown (or its autolinks: "http:", "www.", "a@b") may read as markup.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\!#$%()*+\-./:=?@\[\]^_`{|}~])")


def plain_text(text: object) -> str:
    """Text someone else wrote (a calibration's name or date) shown letter for letter, never as Markdown:
    no emphasis, no link, no autolinked address, no HTML."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text)), quote=False)


# --- the model and the visitor's calibration ---------------------------------------------------------------


def header_model_text(detector: Detector) -> str:
    """Which model is loaded; the full reason when the Hub was asked for and not used."""
    info = detector.model_info
    if info["source"] == "bundled" and not info["repo_id"]:
        created = str(detector.bundle.config.get("created", ""))[:10]
        return f"Model: the bundled demo model{f' (built {created})' if created else ''}."
    warn = "⚠️ " if info["source"] != "hub" and info["repo_id"] else ""
    reason = detector.bundle.reason or ""
    return f"{warn}Model: {model_line(detector)}. {reason[:1].upper() + reason[1:]}".rstrip() + (
        "." if reason and not reason.endswith(".") else ""
    )


def training_note(detector: Detector) -> str:
    """One plain line under the title on what the model learned from."""
    training = detector.bundle.config.get("training") or {}
    if training.get("synthetic"):
        return (
            "The model was trained on this project's own **synthetic gearbox sounds**, not on recordings of "
            "real machines. On a real machine, give it a few normal recordings in **Adapt to my machine** first."
        )
    return (
        f"The model was trained on {training.get('data', 'data not described in its bundle')}. On another "
        "machine, give it a few normal recordings in **Adapt to my machine** first."
    )


def calibration_title(calibration: Calibration) -> str:
    name = calibration.meta.get("name")
    return f"**{plain_text(name)}**" if name else "**your machine**"


def banner(calibration: Calibration | None) -> str:
    """The Analyze tab's line on what recordings are compared with (empty: the model's own reference)."""
    if calibration is None:
        return ""
    created = plain_text(readable_time(calibration.meta.get("created")))
    return (
        f"Comparing with {calibration_title(calibration)}: {calibration.n_clips} normal recordings, "
        f"calibrated {created}. Change or forget it in *Adapt to my machine*."
    )


def calibration_status(calibration: Calibration, source: str) -> str:
    """How many clips were used, which were skipped, the new thresholds, and a warning when rough."""
    meta = calibration.meta
    t = calibration.thresholds
    lines = [
        f"**Adapted {source} to {calibration_title(calibration)} on {calibration.n_clips} normal recording(s)** "
        f"(made {plain_text(readable_time(meta.get('created')))}). Needs maintenance from **{t.maintenance:.2f}**, severe from "
        f"**{t.severe:.2f}**. Every recording is now compared with these. This browser keeps the "
        "calibration until you forget it; download the file to use it elsewhere.",
    ]
    if meta.get("skipped"):
        lines.append(f"Skipped (not usable): {escape_markdown(', '.join(meta['skipped']))}.")
    if meta.get("rough"):
        lines.append(
            f"⚠️ **Rough calibration:** fewer than {ROUGH_CALIBRATION_CLIPS} recordings give only a rough idea "
            "of how much a normal recording varies, so the thresholds are wide. Add more normal recordings."
        )
    return "\n\n".join(lines)


def calibration_hint() -> str:
    return (
        f"Upload at least {MIN_CALIBRATION_CLIPS} normal recordings of your machine "
        f"({ROUGH_CALIBRATION_CLIPS} or more for reliable thresholds)."
    )


def adapt_summary(analysis: Analysis | None, detector: Detector) -> str:
    """The thresholds in force and what they make of the last recording."""
    lines = [f"Thresholds now: {thresholds_text(detector)}."]
    if analysis is None:
        lines.append("Analyze a recording first to see what these settings make of it.")
    else:
        lines.append(
            f"Last recording, **{escape_markdown(analysis.file)}**: score {analysis.score:.2f} -> **{verdict(analysis)}**."
        )
    return "\n\n".join(lines)


def slider_top(detector: Detector, analysis: Analysis | None = None) -> float:
    """The sliders' upper end: room above the severe threshold, the normal scores and the last score."""
    top = max(
        3.0 * detector.thresholds.severe,
        1.5 * float(np.max(detector.normal_scores)) if len(detector.normal_scores) else 0.0,
        1.2 * analysis.score if analysis is not None else 0.0,
    )
    return float(np.ceil(top))


# --- examples ----------------------------------------------------------------------------------------------


def example_label(path: Path) -> str:
    """The label under a bundled example: what a listener would call it."""
    stem = path.stem
    if stem == "normal_source":
        return "healthy gearbox"
    if stem == "normal_target":
        return "healthy gearbox, other speed and load"
    if stem.startswith("fault_"):
        kind = stem.removeprefix("fault_")
        mild = kind.endswith("_mild")
        kind = kind.removesuffix("_mild")
        what = FAULT_NAMES.get(kind, kind.replace("_", " "))
        return f"early fault: {what}" if mild else f"fault: {what}"
    return stem.replace("_", " ")


def example_files(folder: Path) -> list[Path]:
    """The bundled example clips: healthy ones first, then mild faults, then the others."""

    def order(p: Path) -> tuple:
        return (not p.stem.startswith("normal"), not p.stem.endswith("_mild"), p.stem)

    return sorted(folder.glob("*.wav"), key=order)


# --- batch ---------------------------------------------------------------------------------------------------


def batch_rows(rows: list[list], columns: list[str]) -> str:
    """The batch on the page: file, score and verdict (or what is wrong with the file), as an HTML table that
    wraps to the window, a phone's included. The percentile and the rest are in the CSV and the API's table."""
    at = {name: columns.index(name) for name in ("file", "score", "label", "error")}
    body = []
    for row in rows:
        name, score, label, error = (row[at[k]] for k in ("file", "score", "label", "error"))
        if error:
            verdict_cell = f'<span class="batch-error">{html.escape(str(error))}</span>'
        else:
            colour = verdict_colour(str(label))
            verdict_cell = (
                f'<span class="batch-label" style="background:{colour}">{html.escape(str(label))}</span>'
            )
        shown = "" if score is None else f"{score:.2f}"
        body.append(
            f'<tr><td class="batch-file">{html.escape(str(name))}</td><td>{shown}</td><td>{verdict_cell}</td></tr>'
        )
    head = "<tr><th>file</th><th>score</th><th>verdict</th></tr>"
    return f'<table class="batch-rows"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def batch_summary(labels: list[str | None], n_errors: int) -> str:
    counts = {level: labels.count(level) for level in (*LABELS, UNFAMILIAR_VERDICT)}
    parts = [f"{n} {level}" for level, n in counts.items() if n]
    if n_errors:
        parts.append(f"{n_errors} not readable (the table says why)")
    return f"**{len(labels) + n_errors} file(s):** " + (", ".join(parts) or "nothing scored") + "."


# --- fixed texts -----------------------------------------------------------------------------------------------

LIVE_INTRO = (
    "Hold the phone or laptop near the running gearbox and press **Record**: every second the last 2 s are "
    "scored against the model (or your machine, once adapted). **Stop** gives a summary, the readings as CSV and "
    "the worst 10 s as a recording. The browser asks for the microphone first."
)

BATCH_INTRO = (
    f"Score up to {MAX_BATCH_FILES} recordings of one machine at once, for example a folder of weekly recordings: the picture "
    "shows the trend. A file that cannot be read becomes a row with its error."
)

ADAPT_INTRO = (
    "### Teach it what normal sounds like on your machine\n"
    f"Upload at least {MIN_CALIBRATION_CLIPS} recordings of your gearbox running **normally** "
    f"({ROUGH_CALIBRATION_CLIPS} or more for reliable thresholds). From then on every recording is compared with "
    "these. This browser keeps the calibration until you forget it; nobody else sees it.\n\n"
    "**Record every clip from the same spot, with the same gain and distance**: loudness is one of the things "
    "compared, so moving the phone or turning the gain up reads as a change of the machine."
)


def image_hint(params: FeatureParams) -> str:
    return (
        f"8-bit grayscale, one row per mel band ({params.n_mels} rows, lowest frequency at the bottom), one column "
        f"per frame (at least {params.window_frames}); pixel value p means {params.db_min:g} + p/255 x "
        f"{params.db_max - params.db_min:g} dB. The picture this app draws is colour-mapped and cannot be scored "
        "again."
    )


def about(detector: Detector) -> str:
    """The About tab: the model card's own text (one template, ``anomaly.card``), with this app's limits."""
    return card.about_markdown(
        detector.bundle.config,
        model_line=header_model_text(detector),
        max_seconds=MAX_SECONDS,
        max_file_mb=float(MAX_FILE_SIZE.lower().removesuffix("mb")),
        max_batch_files=MAX_BATCH_FILES,
        upload_kept_minutes=(CACHE_MAX_AGE_S + CACHE_SWEEP_S) // 60,
    )
