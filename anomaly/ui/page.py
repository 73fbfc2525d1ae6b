"""What every tab's handlers share: the runtime, the visitor's detector, and the Analyze tab's views.

The handlers themselves live by tab (``analyze``, ``batch``, ``adapt``) and meet in ``handlers.Page``; each
returns a dict keyed by the components it changes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from anomaly import plots
from anomaly.detector import Analysis, Detector
from anomaly.ui import record, views
from anomaly.ui.limits import MAX_SECONDS
from anomaly.ui.runtime import Runtime
from anomaly.ui.session import Session, detector_for


class PageBase:
    """The handlers of one page, bound to its components ``c`` and the shared ``runtime``."""

    def __init__(self, runtime: Runtime, c: SimpleNamespace):
        self.runtime = runtime
        self.c = c

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
        """The API's five outputs: plain values (the verdict as its label, UNFAMILIAR included, as /score
        gives it; no colour update)."""
        view = self._view(analysis, detector, show_map)
        return {k: view[k] for k in self.api_view} | {self.c.label: analysis.label}

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

    def _record(self, stored: object, detector: Detector, analysis: Analysis | None = None) -> dict:
        """The machine's record under the verdict, for the visitor's calibration (hidden without one), with
        ``analysis`` added to it and kept in the browser when given."""
        c = self.c
        calibration = detector.calibration
        if calibration is None:
            return {c.record_box: gr.Column(visible=False)}
        key, name = record.machine_key(calibration), record.machine_name(calibration)
        out = {}
        if analysis is not None:
            reading = record.Reading(record.now(), analysis.file, float(analysis.score), analysis.label)
            stored = out[c.record] = record.with_reading(stored, key, name, reading)
        machine = record.machines_of(stored).get(key, record.Machine(name))
        machine = record.Machine(name, machine.readings)  # the name it has now
        csv_path = None
        if machine.readings:
            csv_path = self.runtime.output_path("machine-record.csv")
            csv_path.write_text(record.csv_text(machine))
        return {
            **out,
            c.record_box: gr.Column(visible=True),
            c.record_text: record.summary(machine, detector.thresholds),
            c.record_trend: record.trend_svg(machine, detector.thresholds),
            c.record_csv: None if csv_path is None else str(csv_path),
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


def unchanged(component) -> dict:
    """Nothing to change: gradio reads an empty dict as one missing value, so one output is skipped by name."""
    return {component: gr.skip()}
