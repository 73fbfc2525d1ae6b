"""The Analyze tab's handlers, and the public API that analyses one recording or image.

The public API handlers (``analyze``, ``analyze_spectrogram``, ``score``) raise their errors, which
gradio_client sees as ``AppError``; the page's handlers (``show_*``) show the same message in place of the
result instead, and clear every old result first.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from anomaly.detector import Analysis, Detector
from anomaly.ui import views
from anomaly.ui.limits import MAX_SECONDS
from anomaly.ui.page import PageBase, unchanged
from anomaly.ui.serving import api_errors, caught, refuse
from anomaly.ui.session import Session, detector_with_file


def api_detector(shared: Detector, calibration: str | None, session: Session | None) -> Detector:
    """The detector of an API call: the calibration file it sent, else the visitor's own; a file that cannot
    be used is refused with one message naming it."""
    with api_errors("reading the calibration file", [calibration] if calibration else []):
        return detector_with_file(shared, calibration, session)


class AnalyzeHandlers(PageBase):
    """One recording or spectrogram image: the public API and the Analyze tab."""

    def analyze(
        self,
        audio: str | None,
        show_anomaly_map: bool = True,
        calibration: str | None = None,
        session: Session | None = None,
    ) -> dict:
        """Check one gearbox recording: is it NORMAL, does it NEED MAINTENANCE, or is it a SEVERE ANOMALY?

        Args:
            audio: a recording (WAV, FLAC, OGG Vorbis/Opus, MP3, M4A/AAC or WebM/Opus; mono or stereo, 16 kHz
                or more; 0.5 to 120 s; at most 50 MB).
            show_anomaly_map: draw where the recording departs from normal over the spectrogram.
            calibration: optional; a calibration file (.npz: the one the Adapt tab downloads or
                `gearbox-sound-check calibrate` writes, made with this model) to score against that machine
                instead of the demo model.

        Returns:
            spectrogram (the picture, PNG), verdict_html (the score gauge, HTML), verdict (the label, as
            /score gives it: NORMAL, NEEDS MAINTENANCE, SEVERE ANOMALY or UNFAMILIAR), details (Markdown)
            and timeline (the score of each piece over time, PNG).
        """
        if not audio:
            raise refuse("Upload or record a gearbox recording first.", title="No recording")
        detector = api_detector(self.shared, calibration, session)
        with api_errors("analysing the recording", [audio]), self.runtime.priority.interactive():
            analysis = self._analysis_of(detector, audio)
        return self._api_view(analysis, detector, show_anomaly_map)

    def analyze_spectrogram(
        self,
        image: str | None,
        show_anomaly_map: bool = True,
        calibration: str | None = None,
        session: Session | None = None,
    ) -> dict:
        """Check a spectrogram image instead of a recording.

        The image must follow the model's convention: an 8-bit grayscale PNG with one row per mel band
        (128 rows, lowest frequency at the bottom), one column per frame (time to the right, at least 64
        columns), pixel value p meaning -100 + p / 255 * 120 dB. Colour-mapped pictures are refused.

        Args:
            image: the spectrogram image.
            show_anomaly_map: draw where the spectrogram departs from normal over it.
            calibration: optional; a calibration file (.npz) to score against that machine (as /analyze).

        Returns:
            spectrogram, verdict_html, verdict, details and timeline, as /analyze.
        """
        if not image:
            raise refuse("Upload a spectrogram image first.", title="No image")
        detector = api_detector(self.shared, calibration, session)
        with api_errors("analysing the spectrogram image", [image]), self.runtime.priority.interactive():
            analysis = self._analysis_of(detector, image, image=True)
        return self._api_view(analysis, detector, show_anomaly_map)

    def score(
        self, audio: str | None, calibration: str | None = None, session: Session | None = None
    ) -> dict:
        """Score one gearbox recording and return plain JSON (fast: no pictures, no anomaly map).

        Args:
            audio: a recording (WAV, FLAC, OGG, MP3, M4A/AAC or WebM; 0.5 to 120 s; at most 50 MB).
            calibration: optional; a calibration file (.npz: the one the Adapt tab downloads or
                `gearbox-sound-check calibrate` writes, made with this model) to score against that machine
                instead of the demo model.

        Returns:
            a dict with file, score, label (NORMAL, NEEDS MAINTENANCE, SEVERE ANOMALY, or UNFAMILIAR: the
            machine sounds unlike anything the demo model was told is normal, so send its calibration or
            adapt first; advice says how), familiar (false for an unfamiliar sound; against a calibration
            the severity stands and advice asks whether it is the same machine), compared_with (the
            calibration's machine when one was sent), percentile (share in % of normal recordings scoring
            lower), thresholds {maintenance, severe}, windows [{start_s, score}], model {source, revision, repo_id,
            calibration}, departures and notes.
        """
        if not audio:
            raise refuse("Upload or record a gearbox recording first.", title="No recording")
        detector = api_detector(self.shared, calibration, session)
        with api_errors("scoring the recording", [audio]), self.runtime.priority.interactive():
            return detector.analyze(audio, max_seconds=MAX_SECONDS).to_json()

    @staticmethod
    def ping() -> str:
        """Does nothing: the HTTP round-trip floor for benchmarks and a cheap health check."""
        return "ok"

    def start_analysis(self, upload: str | None) -> dict:
        """Before an analysis: every old result goes, the verdict box says what is being analysed."""
        name = Path(upload).name if upload else None
        return self._cleared(f"Analysing {name}…" if name else "Waiting for a recording")

    def show_analysis(
        self, audio: str | None, show_map: bool, session: Session | None, kept: object = None
    ) -> dict:
        """The page's Analyze button: the result, or the error in its place; against the visitor's machine,
        the result joins the machine's record ``kept`` in the browser."""
        return self._show(audio, show_map, session, kept, image=False)

    def show_image_analysis(
        self, image: str | None, show_map: bool, session: Session | None, kept: object = None
    ) -> dict:
        """The page's Analyze image button: the result, or the error in its place."""
        return self._show(image, show_map, session, kept, image=True)

    def _show(
        self, upload: str | None, show_map: bool, session: Session | None, kept: object, *, image: bool
    ) -> dict:
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
        return {**self._shown(analysis, detector, show_map), **self._record(kept, detector, analysis)}

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
