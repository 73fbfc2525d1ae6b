"""The event handlers of the Analyze, Batch and Adapt to my machine tabs.

``Page`` holds the shared ``Runtime`` and the page's components (a namespace ``app.py`` fills while laying
the page out); every handler returns a dict keyed by the components it changes, so it cannot drift out of
step with its wiring. Public API handlers (``analyze``, ``analyze_spectrogram``, ``score``, ``batch``)
raise their errors, which gradio_client sees as ``AppError``; the page's handlers (``show_*``) show the same
message in place of the result instead, and clear every old result first.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from anomaly import plots
from anomaly.calibration import Calibration
from anomaly.charts import batch_trend_svg
from anomaly.detector import Analysis, Detector, readable_time
from anomaly.errors import AudioInputError
from anomaly.ui import views
from anomaly.ui.limits import MAX_BATCH_FILES, MAX_CALIBRATION_FILES, MAX_SECONDS
from anomaly.ui.runtime import Runtime
from anomaly.ui.serving import api_errors, caught, redact, refuse, spreadsheet_safe
from anomaly.ui.session import Session, base_detector, detector_for, restore_calibration, stored_calibration

BATCH_COLUMNS = ["file", "score", "percentile", "label", "familiar", "error"]
CSV_COLUMNS = [*BATCH_COLUMNS, "compared_with", "model", "calibration"]


class Page:
    """The handlers of one page, bound to its components ``c`` and the shared ``runtime``."""

    def __init__(self, runtime: Runtime, c: SimpleNamespace):
        self.runtime = runtime
        self.c = c

    # --- what several handlers share -----------------------------------------------------------------------

    @property
    def shared(self) -> Detector:
        return self.runtime.detector

    def detector(self, session: Session | None) -> Detector:
        return detector_for(self.shared, session)

    @property
    def api_view(self) -> list:
        """The outputs of /analyze and /analyze_spectrogram, in their API order."""
        c = self.c
        return [c.spectrogram, c.gauge, c.label, c.details, c.timeline]

    @property
    def view(self) -> list:
        """Everything an analysis fills on the Analyze tab."""
        c = self.c
        return [*self.api_view, c.compared, c.adapt_first]

    def _view(
        self, analysis: Analysis, detector: Detector, show_map: bool, *, spectrogram: bool = True
    ) -> dict:
        """The Analyze tab's views of ``analysis``; without the spectrogram when only the thresholds changed
        (the picture does not depend on them)."""
        c = self.c
        text = views.verdict(analysis)
        out = {
            c.gauge: views.gauge(analysis, analysis.thresholds),
            c.label: gr.Label(value=text, color=views.verdict_colour(text)),
            c.details: views.details(analysis, detector),
            c.timeline: views.timeline(analysis, detector.params),
            c.compared: views.compared_with(analysis),
            c.adapt_first: gr.Button(visible=not analysis.familiar),
        }
        if spectrogram:
            out[c.spectrogram] = views.spectrogram(analysis, detector.params, show_map=show_map)
        return out

    @staticmethod
    def _analysis_of(detector: Detector, upload: str, *, image: bool = False) -> Analysis:
        """A recording, or a spectrogram image, analysed with its anomaly map, within the serving limits."""
        if image:
            return detector.analyze_image(
                upload, name=Path(upload).name, explain=True, max_seconds=MAX_SECONDS
            )
        return detector.analyze(upload, explain=True, max_seconds=MAX_SECONDS)

    def _api_view(self, analysis: Analysis, detector: Detector, show_map: bool) -> dict:
        """The API's five outputs: plain values (the verdict as its words, with no colour update)."""
        view = self._view(analysis, detector, show_map)
        return {k: view[k] for k in self.api_view} | {self.c.label: views.verdict(analysis)}

    def _cleared(self, verdict: str, details: str = "") -> dict:
        """Every result emptied, with a word in the verdict box: nothing old stays on screen."""
        c = self.c
        return {
            c.spectrogram: None,
            c.gauge: "",
            c.label: gr.Label(value=verdict, color=plots.MUTED),
            c.details: details,
            c.timeline: None,
            c.compared: "",
            c.adapt_first: gr.Button(visible=False),
            c.last: None,
        }

    def _failed(self, failure) -> dict:
        # The reason also stands right under the verdict: on a phone the details are a long scroll away.
        out = self._cleared(failure.title, views.error_details(failure.message))
        return {**out, self.c.compared: f"⚠️ {views.escape_markdown(failure.message)}"}

    def _adapt_tab(self, analysis: Analysis | None, detector: Detector) -> dict:
        c = self.c
        label = views.verdict(analysis) if analysis is not None else None
        return {
            c.adapt_label: gr.Label(value=label, color=views.verdict_colour(label)),
            c.adapt_text: views.adapt_summary(analysis, detector),
        }

    # --- public API ----------------------------------------------------------------------------------------

    def analyze(
        self, audio: str | None, show_anomaly_map: bool = True, session: Session | None = None
    ) -> dict:
        """Check one gearbox recording: is it NORMAL, does it NEED MAINTENANCE, or is it a SEVERE ANOMALY?

        Args:
            audio: a recording (WAV, FLAC, OGG Vorbis/Opus, MP3, M4A/AAC or WebM/Opus; mono or stereo, 16 kHz
                or more; 0.5 to 120 s; at most 50 MB).
            show_anomaly_map: draw where the recording departs from normal over the spectrogram.

        Returns:
            the spectrogram picture, the score gauge (HTML), the verdict, details (Markdown) and the score of
            each scored piece over time.
        """
        if not audio:
            raise refuse("Upload or record a gearbox recording first.", title="No recording")
        detector = self.detector(session)
        with api_errors("analysing the recording", [audio]), self.runtime.priority.interactive():
            analysis = self._analysis_of(detector, audio)
        return self._api_view(analysis, detector, show_anomaly_map)

    def analyze_spectrogram(
        self, image: str | None, show_anomaly_map: bool = True, session: Session | None = None
    ) -> dict:
        """Check a spectrogram image instead of a recording.

        The image must follow the model's convention: an 8-bit grayscale PNG with one row per mel band
        (128 rows, lowest frequency at the bottom), one column per frame (time to the right, at least 64
        columns), pixel value p meaning -100 + p / 255 * 120 dB. Colour-mapped pictures are refused.

        Args:
            image: the spectrogram image.
            show_anomaly_map: draw where the spectrogram departs from normal over it.

        Returns:
            the spectrogram picture, the score gauge (HTML), the verdict, details (Markdown) and the score of
            each scored piece over time.
        """
        if not image:
            raise refuse("Upload a spectrogram image first.", title="No image")
        detector = self.detector(session)
        with api_errors("analysing the spectrogram image", [image]), self.runtime.priority.interactive():
            analysis = self._analysis_of(detector, image, image=True)
        return self._api_view(analysis, detector, show_anomaly_map)

    def score(self, audio: str | None, session: Session | None = None) -> dict:
        """Score one gearbox recording and return plain JSON (fast: no pictures, no anomaly map).

        Args:
            audio: a recording (WAV, FLAC, OGG, MP3, M4A/AAC or WebM; 0.5 to 120 s; at most 50 MB).

        Returns:
            a dict with file, score, label (NORMAL, NEEDS MAINTENANCE or SEVERE ANOMALY), familiar (false:
            the machine sounds unlike anything the model was told is normal, so adapt it first; then advice
            says how), compared_with, percentile (share in % of normal recordings scoring lower), thresholds
            {maintenance, severe}, windows [{start_s, score}], model {source, revision, repo_id,
            calibration}, departures and notes.
        """
        if not audio:
            raise refuse("Upload or record a gearbox recording first.", title="No recording")
        with api_errors("scoring the recording", [audio]), self.runtime.priority.interactive():
            return self.detector(session).analyze(audio, max_seconds=MAX_SECONDS).to_json()

    @staticmethod
    def ping() -> str:
        """Does nothing: the HTTP round-trip floor for benchmarks and a cheap health check."""
        return "ok"

    def batch(
        self,
        files: list[str] | None,
        session: Session | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects it
    ) -> dict:
        """Score many recordings at once; a file that cannot be scored becomes a row with its error.

        Args:
            files: the recordings (at most 100 per batch; each at most 120 s and 50 MB).

        Returns:
            a table with one row per file (file, score, percentile, label, familiar, error) and the same
            table as CSV with what each file was compared with, the model and the calibration (a cell that a
            spreadsheet would run as a formula starts with a single quote).
        """
        refusal = _batch_refusal(files)
        if refusal:
            raise refuse(refusal[1], title=refusal[0])
        with api_errors("scoring the batch", files):
            out = self._batch(files, session, progress)
        return {self.c.batch_table: out[self.c.batch_table], self.c.batch_csv: out[self.c.batch_csv]}

    def _batch(self, files: list[str], session: Session | None, progress: gr.Progress) -> dict:
        c = self.c
        detector = self.detector(session)

        def report(done: int, total: int) -> None:
            progress(done / total, desc=f"reading {done}/{total}")
            self.runtime.priority.yield_to_interactive()  # single recordings go first

        progress(0.0, desc="reading recordings")
        results = detector.analyze_many(
            files, names=[Path(f).name for f in files], progress=report, max_seconds=MAX_SECONDS
        )
        model = views.model_line(detector)
        calibration = _calibration_cell(detector.calibration)
        rows, scores = [], []  # the trend is drawn from the unrounded scores
        for result in results:
            if isinstance(result, AudioInputError):
                rows.append([result.source, None, None, None, None, redact(result.problem, files)])
                scores.append(None)
            else:
                score, percentile = round(result.score, 4), round(result.percentile, 1)
                rows.append([result.file, score, percentile, views.verdict(result), result.familiar, ""])
                scores.append(result.score)
        path = self.runtime.output_path("scores.csv")
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                full = [*row, detector.compared_with, model, calibration]
                writer.writerow(["" if v is None else spreadsheet_safe(v) for v in full])
        table = pd.DataFrame(rows, columns=BATCH_COLUMNS).astype(object)
        names = [row[0] for row in rows]
        labels = [row[3] for row in rows if row[3] is not None]
        return {
            c.batch_table: table.where(table.notna(), None),
            c.batch_rows: views.batch_rows(rows, BATCH_COLUMNS),
            c.batch_csv: str(path),
            c.batch_trend: batch_trend_svg(names, scores, detector.thresholds),
            c.batch_status: views.batch_summary(labels, len(rows) - len(labels))
            + f" Compared with {views.plain_text(detector.compared_with)}.",
        }

    # --- the Analyze tab -----------------------------------------------------------------------------------

    def start_analysis(self, upload: str | None) -> dict:
        """Before an analysis: every old result goes, the verdict box says what is being analysed."""
        name = Path(upload).name if upload else None
        return self._cleared(f"Analysing {name}…" if name else "Waiting for a recording")

    def show_analysis(self, audio: str | None, show_map: bool, session: Session | None) -> dict:
        """The page's Analyze button: the result, or the error in its place."""
        return self._show(audio, show_map, session, image=False)

    def show_image_analysis(self, image: str | None, show_map: bool, session: Session | None) -> dict:
        """The page's Analyze image button: the result, or the error in its place."""
        return self._show(image, show_map, session, image=True)

    def _show(self, upload: str | None, show_map: bool, session: Session | None, *, image: bool) -> dict:
        if not upload:
            if image:
                return self._cleared("No image", views.error_details("Upload a spectrogram image first."))
            return self._cleared(
                "No recording", views.error_details("Upload or record a gearbox recording first.")
            )
        detector = self.detector(session)
        doing = "analysing the spectrogram image" if image else "analysing the recording"
        with caught(doing, [upload]) as failure, self.runtime.priority.interactive():
            analysis = self._analysis_of(detector, upload, image=image)
        if failure:
            return self._failed(failure)
        return self._shown(analysis, detector, show_map)

    def _shown(self, analysis: Analysis, detector: Detector, show_map: bool) -> dict:
        return {
            **self._view(analysis, detector, show_map),
            self.c.last: analysis,
            **self._adapt_tab(analysis, detector),
        }

    def example(self, audio: str) -> dict:
        """An example clip with the model's own settings (what gets cached)."""
        return self._view(self._analysis_of(self.shared, audio), self.shared, True)

    def refresh_after_example(self, audio: str | None, show_map: bool, session: Session | None) -> dict:
        """After a cached example is shown: remember its analysis, and redo it if this visitor changed settings."""
        if not audio:
            return unchanged(self.c.last)
        detector = self.detector(session)
        with caught("analysing the example", [audio]) as failure:
            analysis = self._analysis_of(detector, audio)
        if failure:
            return self._failed(failure)
        if session is None or (session.calibration is None and session.manual is None):
            return {self.c.last: analysis, **self._adapt_tab(analysis, detector)}
        return self._shown(analysis, detector, show_map)

    def redraw_spectrogram(self, show_map: bool, last: Analysis | None) -> dict:
        """The last spectrogram with or without the anomaly map (no model run)."""
        if last is None:
            return unchanged(self.c.spectrogram)
        return {self.c.spectrogram: views.spectrogram(last, self.shared.params, show_map=show_map)}

    def go_to_adapt(self) -> dict:
        return {self.c.tabs: gr.Tabs(selected="adapt")}

    # --- the Batch tab -------------------------------------------------------------------------------------

    def show_batch(
        self,
        files: list[str] | None,
        session: Session | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects it
    ) -> dict:
        """The page's Score all button: the table, the CSV and the trend picture, or the error in their place."""
        c = self.c
        cleared = {c.batch_table: None, c.batch_rows: "", c.batch_csv: None, c.batch_trend: ""}
        refusal = _batch_refusal(files)
        if refusal:
            return {**cleared, c.batch_status: f"⚠️ {refusal[1]}"}
        with caught("scoring the batch", files) as failure:
            out = self._batch(files, session, progress)
        if failure:
            return {**cleared, c.batch_status: f"⚠️ **{failure.title}:** {failure.message}"}
        return out

    # --- the Adapt to my machine tab -------------------------------------------------------------------------

    def _after_change(
        self, session: Session, last: Analysis | None, show_map: bool, *, rescore: bool
    ) -> dict:
        """What every settings change updates: the last analysis and its views, both tabs' summaries."""
        c = self.c
        detector = self.detector(session)
        out = {
            c.session: session,
            c.banner: views.banner(session.calibration),
            **self._adapt_tab(None, detector),
        }
        if last is None:
            return out
        if rescore:  # another reference: the scores change, so the recording is scored again
            sound = last.sound if last.sound is not None else detector.as_sound(last.log_mel)
            last = detector.analyze_sound(sound, name=last.file, explain=True)
            view = self._view(last, detector, show_map)
        else:  # other thresholds: the same scores, decided again (label, percentile and familiarity)
            last = detector.relabel(last)
            view = self._view(last, detector, show_map, spectrogram=False)
        return {**out, **view, c.last: last, **self._adapt_tab(last, detector)}

    def _sliders(self, detector: Detector, analysis: Analysis | None) -> dict:
        t, top = detector.thresholds, views.slider_top(detector, analysis)
        return {
            self.c.maintenance: gr.Slider(value=round(t.maintenance, 2), maximum=top),
            self.c.severe: gr.Slider(value=round(t.severe, 2), maximum=top),
        }

    def set_thresholds(
        self,
        maintenance: float,
        severe: float,
        show_map: bool,
        session: Session | None,
        last: Analysis | None,
    ) -> dict:
        """Thresholds set by hand for this visitor; the last recording's verdict follows at once."""
        if maintenance is None or severe is None:
            return unchanged(self.c.session)
        if not 0 <= maintenance < severe:
            return {self.c.adapt_text: "⚠️ The maintenance threshold must be below the severe threshold."}
        session = session or Session()
        base = base_detector(self.shared, session).thresholds
        same = abs(maintenance - base.maintenance) < 1e-6 and abs(severe - base.severe) < 1e-6
        session = replace(session, manual=None if same else (float(maintenance), float(severe)))
        return self._after_change(session, last, show_map, rescore=False)

    def reset_thresholds(self, show_map: bool, session: Session | None, last: Analysis | None) -> dict:
        """Back to the calibrated thresholds (the model's or the visitor's calibration)."""
        session = (session or Session()).without_manual()
        return {
            **self._sliders(self.detector(session), last),
            **self._after_change(session, last, show_map, rescore=False),
        }

    def _use_calibration(
        self,
        calibration: Calibration | None,
        status: str,
        show_map: bool,
        last: Analysis | None,
        *,
        stored: object,
    ) -> dict:
        c = self.c
        session = Session(calibration=calibration)
        return {
            c.calibration_status: status,
            c.stored: stored,
            **self._sliders(self.detector(session), last),
            **self._after_change(session, last, show_map, rescore=True),
        }

    def _kept(self, calibration: Calibration, path: Path) -> object:
        """What the browser keeps, or ``gr.skip()`` (keep what it has) when the file is too big for it."""
        stored = stored_calibration(path, calibration, self.shared, self.runtime.store_secret)
        return stored if stored is not None else gr.skip()

    def calibrate(
        self,
        files: list[str] | None,
        name: str | None,
        show_map: bool,
        session: Session | None,
        last: Analysis | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects it
    ) -> dict:
        """Fit what normal means on the visitor's normal recordings, keep it in the browser, offer the file."""
        c = self.c
        if not files:
            return {c.calibration_status: f"⚠️ {views.calibration_hint()}"}
        if len(files) > MAX_CALIBRATION_FILES:
            return {
                c.calibration_status: f"⚠️ At most {MAX_CALIBRATION_FILES} recordings can be used at once."
            }

        def report(done: int, total: int) -> None:
            progress(done / total, desc=f"reading {done}/{total}")
            self.runtime.priority.yield_to_interactive()

        with caught("adapting to your recordings", files) as failure:
            calibration = self.shared.calibrate(files, progress=report, max_seconds=MAX_SECONDS, name=name)
            path = calibration.save(self.runtime.output_path("calibration.npz"))
        if failure:
            return {c.calibration_status: f"⚠️ **{failure.title}:** {failure.message}"}
        status = views.calibration_status(calibration, "here")
        out = self._use_calibration(calibration, status, show_map, last, stored=self._kept(calibration, path))
        return {**out, c.calibration_file: str(path)}

    def load_calibration_file(
        self,
        file: str | None,
        name: str | None,
        show_map: bool,
        session: Session | None,
        last: Analysis | None,
    ) -> dict:
        """Use a calibration file saved earlier (refused unless it was made with this model)."""
        c = self.c
        if not file:
            return unchanged(self.c.session)
        with caught("reading the calibration file", [file]) as failure:
            calibration = self.shared.load_calibration(file)
            if name and name.strip():
                calibration = calibration.named(name)
            path = calibration.save(self.runtime.output_path("calibration.npz"))
        if failure:
            return {c.calibration_status: f"⚠️ **{failure.title}:** {failure.message}"}
        status = views.calibration_status(calibration, f"from {Path(file).name}")
        out = self._use_calibration(calibration, status, show_map, last, stored=self._kept(calibration, path))
        return {**out, c.calibration_file: str(path)}

    def forget_calibration(self, show_map: bool, session: Session | None, last: Analysis | None) -> dict:
        """Drop the visitor's calibration (here and in the browser) and hand-set thresholds."""
        status = "Back to the model's own reference: the synthetic demo gearbox and its thresholds."
        out = self._use_calibration(None, status, show_map, last, stored=None)
        return {**out, self.c.calibration_file: None}

    def restore(self, stored: object, show_map: bool) -> dict:
        """On page load: use the calibration this browser kept, if it still fits the model."""
        c = self.c
        if not stored:
            return unchanged(self.c.session)
        scratch = self.runtime.output_path("restored-calibration.npz")
        with caught("restoring your calibration", [scratch]) as failure:
            calibration = restore_calibration(stored, self.shared, scratch, self.runtime.store_secret)
        if failure:
            return {
                c.stored: None,
                c.calibration_status: f"⚠️ The calibration kept in this browser was dropped: {failure.message}",
            }
        status = views.calibration_status(calibration, "(kept in this browser)")
        return {
            **self._use_calibration(calibration, status, show_map, None, stored=gr.skip()),
            c.calibration_file: str(scratch),
        }


def _batch_refusal(files: list[str] | None) -> tuple[str, str] | None:
    """The title and message that refuse a batch before any file is read, or None."""
    if not files:
        return "No files", "Choose one or more recordings first."
    if len(files) > MAX_BATCH_FILES:
        return "Too many", f"{len(files)} files: at most {MAX_BATCH_FILES} can be scored at once."
    return None


def unchanged(component) -> dict:
    """Nothing to change: gradio reads an empty dict as one missing value, so one output is skipped by name."""
    return {component: gr.skip()}


def _calibration_cell(calibration: Calibration | None) -> str:
    if calibration is None:
        return ""
    name = calibration.meta.get("name") or "unnamed"
    return f"{name} ({calibration.n_clips} recordings, {readable_time(calibration.meta.get('created'))})"
