"""The Batch tab's handlers: many recordings scored at once into a table, a CSV and a trend picture.

``batch`` is the public API (it raises its errors); ``show_batch`` is the page's button, which shows the
error in place of the results.
"""

from __future__ import annotations

import csv
from pathlib import Path

import gradio as gr
import pandas as pd

from anomaly.analysis import readable_time
from anomaly.calibration import Calibration
from anomaly.charts import batch_trend_svg
from anomaly.detector import Detector
from anomaly.errors import AudioInputError
from anomaly.ui import views
from anomaly.ui.analyze import api_detector
from anomaly.ui.limits import MAX_BATCH_FILES, MAX_SECONDS
from anomaly.ui.page import PageBase
from anomaly.ui.serving import api_errors, caught, redact, refuse, spreadsheet_safe
from anomaly.ui.session import Session

BATCH_COLUMNS = ["file", "score", "percentile", "label", "familiar", "error"]
CSV_COLUMNS = [*BATCH_COLUMNS, "compared_with", "model", "calibration"]


class BatchHandlers(PageBase):
    """Many recordings at once: the public /batch and the Batch tab."""

    def batch(
        self,
        files: list[str] | None,
        calibration: str | None = None,
        session: Session | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - gradio injects it
    ) -> dict:
        """Score many recordings at once; a file that cannot be scored becomes a row with its error.

        Args:
            files: the recordings (at most 100 per batch; each at most 120 s and 50 MB).
            calibration: optional; a calibration file (.npz: the one the Adapt tab downloads or
                `gearbox-sound-check calibrate` writes, made with this model) to score against that machine
                instead of the demo model.

        Returns:
            a table with one row per file (file, score, percentile, label as /score gives it: NORMAL, NEEDS
            MAINTENANCE, SEVERE ANOMALY or UNFAMILIAR; familiar, error) and the same
            table as CSV with what each file was compared with, the model and the calibration (a cell that a
            spreadsheet would run as a formula starts with a single quote).
        """
        refusal = _batch_refusal(files)
        if refusal:
            raise refuse(refusal[1], title=refusal[0])
        detector = api_detector(self.shared, calibration, session)
        with api_errors("scoring the batch", files):
            out = self._batch(files, detector, progress)
        return {self.c.batch_table: out[self.c.batch_table], self.c.batch_csv: out[self.c.batch_csv]}

    def _batch(self, files: list[str], detector: Detector, progress: gr.Progress) -> dict:
        c = self.c

        def report(done: int, total: int) -> None:
            progress(done / total, desc=f"reading {done}/{total}")
            self.runtime.priority.yield_to_interactive()  # single recordings go first

        progress(0.0, desc="reading recordings")
        results = detector.analyze_many(
            files, names=[Path(f).name for f in files], progress=report, max_seconds=MAX_SECONDS
        )
        model = views.model_line(detector)
        calibration = _calibration_cell(detector.calibration)
        # The table and the CSV carry the label as /score gives it; the page's rows, the verdict's words.
        rows, shown, scores = [], [], []  # the trend is drawn from the unrounded scores
        for result in results:
            if isinstance(result, AudioInputError):
                rows.append([result.source, None, None, None, None, redact(result.problem, files)])
                shown.append(rows[-1])
                scores.append(None)
            else:
                score, percentile = round(result.score, 4), round(result.percentile, 1)
                rows.append([result.file, score, percentile, result.label, result.familiar, ""])
                shown.append([result.file, score, percentile, views.verdict(result), result.familiar, ""])
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
        labels = [row[3] for row in shown if row[3] is not None]
        return {
            c.batch_table: table.where(table.notna(), None),
            c.batch_rows: views.batch_rows(shown, BATCH_COLUMNS),
            c.batch_csv: str(path),
            c.batch_trend: batch_trend_svg(names, scores, detector.thresholds, [row[3] for row in rows]),
            c.batch_status: views.batch_summary(labels, len(rows) - len(labels))
            + f" Compared with {views.plain_text(detector.compared_with)}.",
        }

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
            out = self._batch(files, self.detector(session), progress)
        if failure:
            return {**cleared, c.batch_status: f"⚠️ **{failure.title}:** {failure.message}"}
        return out


def _batch_refusal(files: list[str] | None) -> tuple[str, str] | None:
    """The title and message that refuse a batch before any file is read, or None."""
    if not files:
        return "No files", "Choose one or more recordings first."
    if len(files) > MAX_BATCH_FILES:
        return "Too many", f"{len(files)} files: at most {MAX_BATCH_FILES} can be scored at once."
    return None


def _calibration_cell(calibration: Calibration | None) -> str:
    if calibration is None:
        return ""
    name = calibration.meta.get("name") or "unnamed"
    return f"{name} ({calibration.n_clips} recordings, {readable_time(calibration.meta.get('created'))})"
