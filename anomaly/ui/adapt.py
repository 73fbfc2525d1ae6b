"""The Adapt to my machine tab's handlers: thresholds set by hand, and calibrations made, loaded, kept in
the browser and forgotten. Every change relabels (or rescores) the last analysis on both tabs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gradio as gr

from anomaly.calibration import Calibration
from anomaly.detector import Analysis, Detector
from anomaly.ui import record, views
from anomaly.ui.limits import MAX_CALIBRATION_FILES, MAX_SECONDS
from anomaly.ui.page import PageBase, unchanged
from anomaly.ui.serving import caught
from anomaly.ui.session import Session, base_detector, restore_calibration, stored_calibration


class AdaptHandlers(PageBase):
    """What this visitor changed: thresholds and calibration."""

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
        kept: object = None,
    ) -> dict:
        """Thresholds set by hand for this visitor; the last recording's verdict and the machine's record (its
        threshold lines and trend words) follow at once."""
        if maintenance is None or severe is None:
            return unchanged(self.c.session)
        if not 0 <= maintenance < severe:
            return {self.c.adapt_text: "⚠️ The maintenance threshold must be below the severe threshold."}
        session = session or Session()
        base = base_detector(self.shared, session).thresholds
        same = abs(maintenance - base.maintenance) < 1e-6 and abs(severe - base.severe) < 1e-6
        session = replace(session, manual=None if same else (float(maintenance), float(severe)))
        return {
            **self._after_change(session, last, show_map, rescore=False),
            **self._record(kept, self.detector(session)),
        }

    def reset_thresholds(
        self, show_map: bool, session: Session | None, last: Analysis | None, kept: object = None
    ) -> dict:
        """Back to the calibrated thresholds (the model's or the visitor's calibration)."""
        session = (session or Session()).without_manual()
        return {
            **self._sliders(self.detector(session), last),
            **self._after_change(session, last, show_map, rescore=False),
            **self._record(kept, self.detector(session)),
        }

    def _use_calibration(
        self,
        calibration: Calibration | None,
        status: str,
        show_map: bool,
        last: Analysis | None,
        *,
        stored: object,
        kept: object = None,
    ) -> dict:
        c = self.c
        session = Session(calibration=calibration)
        return {
            c.calibration_status: status,
            c.stored: stored,
            **self._sliders(self.detector(session), last),
            **self._after_change(session, last, show_map, rescore=True),
            **self._record(kept, self.detector(session)),  # this machine's record, if it has one here
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
        kept: object = None,
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
        out = self._use_calibration(
            calibration, status, show_map, last, stored=self._kept(calibration, path), kept=kept
        )
        return {**out, c.calibration_file: str(path)}

    def load_calibration_file(
        self,
        file: str | None,
        name: str | None,
        show_map: bool,
        session: Session | None,
        last: Analysis | None,
        kept: object = None,
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
        out = self._use_calibration(
            calibration, status, show_map, last, stored=self._kept(calibration, path), kept=kept
        )
        return {**out, c.calibration_file: str(path)}

    def forget_calibration(
        self, show_map: bool, session: Session | None, last: Analysis | None, kept: object = None
    ) -> dict:
        """Drop the visitor's calibration (here and in the browser), its machine's record and hand-set
        thresholds."""
        status = "Back to the model's own reference: the synthetic demo gearbox and its thresholds."
        calibration = session.calibration if session else None
        if calibration is not None:
            kept = record.without_machine(kept, record.machine_key(calibration))
            status += " This machine's calibration and record are gone from this browser."
        out = self._use_calibration(None, status, show_map, last, stored=None)
        # None removes the browser's entry (session.browser_store); gr.skip() leaves it as it was.
        return {**out, self.c.calibration_file: None, self.c.record: kept if calibration else gr.skip()}

    def restore(self, stored: object, show_map: bool, kept: object = None) -> dict:
        """On page load: use the calibration this browser kept, if it still fits the model."""
        c = self.c
        if not stored:
            return unchanged(self.c.session)
        scratch = self.runtime.output_path("restored-calibration.npz")
        with caught("restoring your calibration", [scratch]) as failure:
            calibration = restore_calibration(stored, self.shared, scratch, self.runtime.store_secret)
        if failure.internal:  # our fault, not the calibration's: the browser keeps it for the next visit
            return {c.calibration_status: f"⚠️ {failure.message}"}
        if failure:
            return {
                c.stored: None,
                c.calibration_status: f"⚠️ The calibration kept in this browser was dropped: {failure.message}",
            }
        status = views.calibration_status(calibration, "(kept in this browser)")
        return {
            **self._use_calibration(calibration, status, show_map, None, stored=gr.skip(), kept=kept),
            c.calibration_file: str(scratch),
        }
