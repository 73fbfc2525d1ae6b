"""The user's reference as a scorer: clip-level spectral blocks of their own normal recordings
(``anomaly.reference.Reference``), with the familiarity check fitted on the same clips (format 3 files)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anomaly.bands import REFERENCE_BAND_DROP_DB, band_hz
from anomaly.familiarity import ADVICE_CALIBRATION, USER_SPREAD_FLOOR_DB, Familiarity, ShapeFamiliarity
from anomaly.reference import Recipe, Reference, piece_starts
from anomaly.scorers.base import BaseScorer, Scored
from anomaly.scoring import Thresholds
from anomaly.sound import Sound, mel_blocks

PICTURE_ONLY_NOTE = (
    "Scored from the spectrogram picture alone: the checks of fine frequency lines and of rhythm need the "
    "recording itself."
)


@dataclass
class Prepared:
    """A recording as heard, and its segment scores (computed in the decoding thread: no network here)."""

    heard: Sound
    scores: np.ndarray
    starts: np.ndarray


class ReferenceScorer(BaseScorer):
    """Scores recordings against a ``Reference`` fitted on the user's normal clips."""

    method = "reference"
    unfamiliar_hides_severity = False

    def __init__(
        self, bundle, reference: Reference, familiarity: Familiarity | None, *, thresholds: Thresholds | None = None
    ):
        super().__init__(
            thresholds=thresholds or reference.thresholds,
            normal_scores=np.sort(reference.normal_scores_),
            familiarity=familiarity,
            advice=ADVICE_CALIBRATION,
        )
        self.reference = reference
        self.params = bundle.params
        self.band_hz = band_hz(self.params)

    @property
    def needs_wave(self) -> bool:  # type: ignore[override] - a property here, a plain attribute elsewhere
        return self.reference.recipe.needs_wave

    @property
    def caution(self) -> str | None:  # type: ignore[override]
        return self.reference.caution

    def band_levels(self, spec_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        # A real machine's own sound can lose a few dB at the top (a change of state): against a user's
        # reference only a codec-sized cliff counts as missing bands.
        return mel_blocks(spec_db, ("pmean",))["pmean"], self.reference.spectrum_mean_, REFERENCE_BAND_DROP_DB

    def prepare(self, heard: Sound, n_shared: int, *, name: str) -> Prepared:
        """Segment scores; above the bands the recording shares with the reference (``n_shared``), fine
        and rhythm details count as normal."""
        heard_hz = float(self.band_hz[n_shared - 1]) if n_shared < self.params.n_mels else None
        scores, starts = self.reference.segment_scores(heard, heard_hz=heard_hz)
        return Prepared(heard, scores, starts)

    def score(self, prepared: Sequence[Prepared], *, explain: bool = False) -> list[Scored]:
        out = []
        for p in prepared:
            notes = (PICTURE_ONLY_NOTE,) if self.needs_wave and not p.heard.has_wave else ()
            spec = p.heard.log_mel
            # The timeline's pieces: one per second, each weighted within its segment (the worst carries
            # the recording's score; ``Reference.piece_scores``).
            scores, starts = self.reference.piece_scores(spec, p.scores, p.starts)
            out.append(
                Scored(
                    scores,
                    starts,
                    self.reference.anomaly_map(spec) if explain else None,
                    notes,
                    self.reference.departures(spec, self.band_hz),
                )
            )
        return out

    def piece_seconds(self, n_frames: int) -> float:
        """A second of the recording on the timeline (``Reference.piece_scores``); a segment of the
        reference, or the whole clip, when the recording is too short for two."""
        pieces = piece_starts(n_frames, self.reference.piece_frames)
        if len(pieces) >= 2 and self.reference.piece_mean_ is not None:
            return self.reference.piece_frames * self.params.frame_seconds
        return min(self.reference.segment_frames_, n_frames) * self.params.frame_seconds

    def describe(self) -> dict:
        return {"method": "reference", "recipe": self.reference.recipe.to_dict()}

    # --- calibration files (format 3) --------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.reference.to_arrays() | (self.familiarity.to_arrays() if self.familiarity is not None else {})

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict, bundle, thresholds: Thresholds) -> ReferenceScorer:
        params = bundle.params
        recipe = Recipe.from_dict(meta["reference_recipe"])
        reference = Reference.from_arrays(arrays, recipe, sr=params.sr, hop_length=params.hop_length)
        familiarity = Familiarity.from_arrays(arrays)
        if reference.spectrum_mean_.shape != (params.n_mels,) or (
            familiarity is not None and familiarity.mean_.shape[1:] != (params.n_mels,)
        ):
            raise ValueError("the calibration's band count does not match this model")
        return cls(bundle, reference, familiarity, thresholds=thresholds)

    @classmethod
    def fit(
        cls, bundle, clips: Sequence[Sound], *, domains: Sequence[str], recipe: Recipe | None = None
    ) -> tuple[ReferenceScorer, dict]:
        """Fit a ``Reference`` (``recipe``, default the one chosen on real machines) and the shape
        familiarity check on normal clips. Returns the scorer and what the calibration file says of it."""
        params = bundle.params
        reference = Reference(recipe, sr=params.sr, hop_length=params.hop_length).fit(clips)
        familiarity = ShapeFamiliarity(params.window_frames, USER_SPREAD_FLOOR_DB).fit(
            [reference.sound(c).log_mel for c in clips]
        )
        meta = {
            "format_version": 3,
            "method": "reference",
            "domains": ["user"],
            "reference_recipe": reference.recipe.to_dict(),
            "segment_seconds": round(reference.segment_frames_ * params.frame_seconds, 3),
        }
        return cls(bundle, reference, familiarity), meta
