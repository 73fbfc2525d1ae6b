"""What every scorer offers the Detector, and the one decision taken from a score.

A scorer says how far a recording is from one idea of "normal": the bundled model's windows
(``anomaly.scorers.window``) or the user's reference (``anomaly.scorers.reference``). The Detector decodes,
checks the bands (``anomaly.bands``) and hands the scorer what it heard; the scorer prepares it (in the
decoding threads), scores prepared recordings (in groups where that pays) and knows its own thresholds,
normal scores and familiarity check. ``decide`` turns a score into the verdict every surface shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from anomaly.familiarity import Familiarity
from anomaly.scoring import UNFAMILIAR, Thresholds, percentile
from anomaly.sound import Sound


@dataclass
class Scored:
    """One recording as a scorer scored it: a score per piece, each piece's first frame, and (with
    ``explain``) the map of where it departs from normal; ``notes`` and ``departures`` for the answer."""

    scores: np.ndarray
    starts: np.ndarray
    anomaly_map: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    departures: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """The verdict on one score: its label, the share of normal recordings that scored lower, whether the
    recording sounds like what the scorer knows, and what to do when it does not."""

    label: str
    percentile: float
    familiar: bool
    advice: str | None


@runtime_checkable
class Scorer(Protocol):
    """The interface the Detector scores through (see the module docstring)."""

    method: ClassVar[str]
    thresholds: Thresholds
    normal_scores: np.ndarray
    familiarity: Familiarity | None
    advice: str
    needs_wave: bool
    caution: str | None
    unfamiliar_hides_severity: bool

    def band_levels(self, spec_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The recording's level per band, the normal level per band, and how far below normal the top
        bands must fall to count as cut off (a codec's low-pass)."""
        ...

    def prepare(self, heard: Sound, n_shared: int, *, name: str) -> Any:
        """What ``score`` needs of one recording (``n_shared``: bands from the bottom it really carries)."""
        ...

    def cost(self, prepared: Any) -> int:
        """How much one prepared recording weighs in a group scored at once (the Detector's batching)."""
        ...

    def score(self, prepared: Sequence[Any], *, explain: bool = False) -> list[Scored]: ...

    def piece_seconds(self, n_frames: int) -> float:
        """How long each scored piece of a recording of ``n_frames`` is."""
        ...

    def shape(self, heard_db: np.ndarray) -> float | None:
        """The familiarity statistic of a recording (None: this scorer has no familiarity check)."""
        ...

    def describe(self) -> dict:
        """``method`` and ``recipe``, for the answer's model information."""
        ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...


class BaseScorer:
    """What the scorers share: thresholds, normal scores and the familiarity check."""

    method: ClassVar[str] = ""
    needs_wave: bool = False
    caution: str | None = None
    # Whether a recording this scorer finds unfamiliar is most likely another machine, whose score says
    # nothing of wear (the bundled model and an unknown machine): then its verdict is UNFAMILIAR. Against a
    # user's own normals an unfamiliar sound of their machine is likelier a fault that reshapes its
    # spectrum, so the severity stands and the advice asks whether it is the same machine.
    unfamiliar_hides_severity: bool = True

    def __init__(
        self,
        *,
        thresholds: Thresholds,
        normal_scores: np.ndarray,
        familiarity: Familiarity | None,
        advice: str,
    ):
        self.thresholds = thresholds
        self.normal_scores = np.asarray(normal_scores, dtype=np.float64)
        self.familiarity = familiarity
        self.advice = advice

    def cost(self, prepared: Any) -> int:
        return 1

    def shape(self, heard_db: np.ndarray) -> float | None:
        return None if self.familiarity is None else self.familiarity.statistic(heard_db)


def decide(score: float, scorer: Scorer, thresholds: Thresholds, shape: float | None) -> Decision:
    """The verdict on ``score`` under ``thresholds`` (the scorer's, or set by hand): label, percentile among
    the scorer's normal scores, and familiarity. This is the one verdict every surface shows (page, API,
    batch, CSV, CLI, live, archive). A recording the bundled model finds unfamiliar is ``UNFAMILIAR``, never a
    severity; against a user's reference the severity stands (``BaseScorer.unfamiliar_hides_severity``).

    ``shape`` is ``scorer.shape`` of what was heard. A score far beyond the scorer's own severe threshold
    with an envelope already unlike normal speaks of another machine; the scorer's calibrated threshold is
    the yardstick there, not one set by hand, so that moving the alarm levels never turns a machine into
    another one."""
    familiar = (
        scorer.familiarity is None
        or shape is None
        or scorer.familiarity.judge(shape, score / scorer.thresholds.severe)
    )
    severity = thresholds.label(score)  # raises on a NaN score, familiar or not
    return Decision(
        label=UNFAMILIAR if not familiar and scorer.unfamiliar_hides_severity else severity,
        percentile=percentile(score, scorer.normal_scores),
        familiar=familiar,
        advice=None if familiar else scorer.advice,
    )
