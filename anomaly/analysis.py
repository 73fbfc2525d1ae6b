"""What scoring one recording found (``Analysis``): the verdict, the scores of its pieces, what it was
compared with and what the answer should say; and its plain-JSON view for the CLI and the API."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anomaly.scoring import Thresholds
from anomaly.sound import Sound


@dataclass
class Analysis:
    """The outcome of scoring one recording."""

    file: str
    score: float
    label: str
    percentile: float
    thresholds: Thresholds
    window_scores: np.ndarray
    window_times_s: np.ndarray
    model: dict
    log_mel: np.ndarray | None = field(default=None, repr=False)
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    duration_s: float = 0.0
    elapsed_ms: float = 0.0
    familiar: bool = True
    advice: str | None = None
    notes: list[str] = field(default_factory=list)
    departures: list[dict] = field(default_factory=list)
    compared_with: str = ""
    # Length of each scored piece (a model window, or a segment of the user's reference), in seconds.
    window_seconds: float = 0.0
    # With ``explain``: the recording as scored (log-mel and waveform), to score it again against another
    # calibration without decoding it again.
    sound: Sound | None = field(default=None, repr=False)
    # Set when the calibration rests on too few recordings to trust a NORMAL (also one of ``notes``).
    caution: str | None = None
    # The scorer's familiarity statistic of what was heard (``Scorer.shape``), to decide again when the
    # thresholds change (``Detector.relabel``).
    shape: float | None = None

    def to_json(self) -> dict:
        """The CLI's and the API's plain-JSON view."""
        out = {
            "file": self.file,
            "score": round(float(self.score), 4),
            "label": self.label,
            "familiar": bool(self.familiar),
        }
        if not self.familiar:
            out["advice"] = self.advice
        return out | {
            "compared_with": self.compared_with,
            "percentile": round(float(self.percentile), 2),
            "thresholds": {
                "maintenance": round(self.thresholds.maintenance, 4),
                "severe": round(self.thresholds.severe, 4),
            },
            "windows": [
                {"start_s": round(float(t), 3), "score": round(float(s), 4)}
                for t, s in zip(self.window_times_s, self.window_scores, strict=True)
            ],
            "model": dict(self.model),
            "departures": list(self.departures),
            "notes": list(self.notes),
        }


def compared_with(bundle, calibration) -> str:
    """What a score is measured against (``bundle``, or the user's ``calibration`` when there is one), in
    words a maintenance engineer reads."""
    if calibration is None:
        training = bundle.config.get("training", {})
        if training.get("synthetic"):
            return "the synthetic demo gearbox the model was trained on"
        return f"the normal recordings the model was trained on ({training.get('data', 'its training data')})"
    created = readable_time(calibration.meta.get("created"))
    name = calibration.meta.get("name")
    what = f"{name}: " if name else ""
    return f"{what}your machine ({calibration.n_clips} normal recordings, calibrated {created})"


def readable_time(iso: str | None) -> str:
    """``2026-11-30T22:58:31+00:00`` as ``2026-11-30 22:58 UTC``; anything else as it is."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso or "at an unknown time")
    if when.utcoffset() == dt.timedelta(0):
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.strftime("%Y-%m-%d %H:%M %z").strip()
