"""Does a recording sound like the sounds a model or a calibration was fitted on?

A score is only meaningful against a reference that describes the machine. The bundled model knows a
synthetic gearbox; a healthy fan, a slider or even a real gearbox recorded elsewhere lies far from it and
gets a huge score that says "unlike the training sounds", not "broken". ``Familiarity`` tells the two
apart before a verdict is given.

The test looks at the recording's spectral envelope (the mean of each log-mel band over the clip) against
the spread of 2 s window means of the reference's normal clips, per reference domain, and asks two
questions that faults rarely trigger but another machine does:

- are many bands *quieter* than anything normal? Faults add energy (impacts, noise, sidebands); they
  seldom take a band away. Another machine lacks the reference's lines and resonances
  (``rms of the negative deviations``).
- is even the best-matching tenth of the bands far *louder* than normal? A fault raises some bands; a
  louder, different machine raises all of them (``10th percentile of the deviations``).

The statistic is the larger of the two, each divided by a unit (``NEGATIVE_UNIT``, ``LOWER_DECILE_UNIT``),
taken at the nearest domain; above ``THRESHOLD`` the recording is unfamiliar, and below it a score many
times the severe threshold tips it over (``is_familiar``).
Measured (``scripts/familiarity_check.py``): synthetic normals and every synthetic fault of a corpus of
another seed stay below it; the real machines in ``../shared/data`` lie above it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEGATIVE_UNIT = 2.5
LOWER_DECILE_UNIT = 3.0
# Synthetic normals and faults of other seeds stay below 0.37; most real clips lie above (see below).
THRESHOLD = 0.5
# With the score over the severe threshold (see ``is_familiar``): synthetic faults of seeds 2 and 3, up to
# 5.3 times the severe threshold, and the bundled examples stay familiar; loud real machines with
# gearbox-like envelopes do not. Both constants were set on those sets (scripts/familiarity_check.py): 0 of
# 480 synthetic clips and 376 of 376 real clips flagged; the closest on each side are 0.99 and 1.06.
SCORE_RATIO_UNIT = 8.5
# A band's spread is never taken below this (dB): a handful of clips can agree to a fraction of a dB.
SPREAD_FLOOR_DB = 1.0
# The same for a user's calibration: three to ten real clips understate how much a machine's bands wander
# (at 1 dB, 9 of 16 healthy fan clips were called unfamiliar after calibrating on 3; at 3 dB, 2 of 16).
USER_SPREAD_FLOOR_DB = 3.0

FAMILIARITY_CONFIG = {
    "method": "band envelope against per-domain spread of 2 s window means of the normal clips",
    "statistic": "max(rms of negative z / NEGATIVE_UNIT, 10th percentile of z / LOWER_DECILE_UNIT), nearest domain",
}

ADVICE_MODEL = (
    "This does not sound like the gearboxes the model learned; give it 3 or more normal recordings of "
    "your machine in 'Adapt to my machine'."
)
ADVICE_CALIBRATION = (
    "This does not sound like the normal recordings this calibration was made from: is it the same "
    "machine, recorded from the same spot with the same gain?"
)


def window_band_means(spec_db: np.ndarray, window_frames: int) -> np.ndarray:
    """Mean of each band over consecutive windows of ``window_frames`` (at least one window)."""
    n = spec_db.shape[1]
    count = max(1, n // window_frames)
    usable = spec_db[:, : count * window_frames] if n >= window_frames else spec_db
    return np.stack([w.mean(axis=1) for w in np.array_split(usable, count, axis=1)])


class Familiarity:
    """Per-domain envelope of normal band levels; ``statistic`` > ``THRESHOLD`` means unfamiliar."""

    def __init__(self, window_frames: int = 64, spread_floor_db: float = SPREAD_FLOOR_DB):
        self.window_frames = int(window_frames)
        self.spread_floor_db = float(spread_floor_db)

    def fit(self, clip_specs: Sequence[np.ndarray], domains: Sequence[str] | None = None) -> Familiarity:
        domains = list(domains) if domains is not None else ["user"] * len(clip_specs)
        self.domains_ = sorted(set(domains))
        means, spreads = [], []
        for domain in self.domains_:
            rows = np.concatenate(
                [
                    window_band_means(np.asarray(s, np.float64), self.window_frames)
                    for s, d in zip(clip_specs, domains, strict=True)
                    if d == domain
                ]
            )
            means.append(rows.mean(axis=0))
            spreads.append(np.maximum(rows.std(axis=0), self.spread_floor_db))
        self.mean_ = np.stack(means)
        self.spread_ = np.stack(spreads)
        return self

    def statistic(self, spec_db: np.ndarray) -> float:
        """How unlike the reference the recording's envelope is (above ``THRESHOLD``: unfamiliar)."""
        envelope = np.asarray(spec_db, np.float64).mean(axis=1)
        z = (envelope[None, :] - self.mean_) / self.spread_
        negative = np.sqrt(np.mean(np.square(np.maximum(-z, 0.0)), axis=1)) / NEGATIVE_UNIT
        lower_decile = np.percentile(z, 10, axis=1) / LOWER_DECILE_UNIT
        return float(np.maximum(negative, lower_decile).min())

    def is_familiar(self, spec_db: np.ndarray, score_ratio: float = 0.0) -> bool:
        return self.judge(self.statistic(spec_db), score_ratio)

    def judge(self, statistic: float, score_ratio: float = 0.0) -> bool:
        """``statistic / THRESHOLD + score_ratio / SCORE_RATIO_UNIT <= 1``.

        ``score_ratio`` is the recording's score over the severe threshold. A faulty gearbox can score far
        beyond it with the envelope of a gearbox; an envelope already half-way to unfamiliar with a score
        many times the severe threshold is another machine, not a worse fault.
        """
        return statistic / THRESHOLD + max(float(score_ratio), 0.0) / SCORE_RATIO_UNIT <= 1.0

    def to_arrays(self, prefix: str = "familiar_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}mean": self.mean_,
            f"{prefix}spread": self.spread_,
            f"{prefix}domains": np.asarray(self.domains_, dtype=str),
            f"{prefix}window_frames": np.asarray(self.window_frames),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "familiar_") -> Familiarity | None:
        """The familiarity stored in ``arrays``, or None when they hold none (older bundles); a user
        calibration's ``ShapeFamiliarity`` when they hold its threshold."""
        if f"{prefix}mean" not in arrays:
            return None
        if cls is Familiarity and f"{prefix}threshold" in arrays:
            return ShapeFamiliarity.from_arrays(arrays, prefix)
        self = cls(int(arrays[f"{prefix}window_frames"]))
        self.mean_ = np.asarray(arrays[f"{prefix}mean"], np.float64)
        self.spread_ = np.asarray(arrays[f"{prefix}spread"], np.float64)
        self.domains_ = [str(d) for d in arrays[f"{prefix}domains"]]
        return self


# A user's clip is unfamiliar when its band shape departs from the calibration clips' by more than this many
# times their own typical departure (each scored against the others, leave one out).
SHAPE_FACTOR = 2.0
# The typical leave-one-out departure is never taken below this (in spreads): clips that happen to agree
# closely must not make every new take unfamiliar.
SHAPE_FLOOR = 0.3


def shape_departure(envelope_db: np.ndarray, mean_db: np.ndarray, spread_db: np.ndarray) -> float:
    """Root-mean-square departure of a band envelope from a normal one, in normal spreads, after the overall
    gain (the median difference) is taken away: another machine has another shape; the same machine
    recorded louder or with a broadband fault keeps much of its own."""
    d = np.asarray(envelope_db, np.float64) - mean_db
    return float(np.sqrt(np.mean(np.square((d - np.median(d)) / spread_db))))


class ShapeFamiliarity(Familiarity):
    """Familiarity against a user's own normal clips (after adapting).

    The bundled model's test (``Familiarity``) has fixed units, set on the synthetic corpus; a real machine's
    own clips vary by machine, by take and by speed (a cycling machine's bands swing by 10 dB). So here the
    unit comes from the user's clips: each calibration clip's ``shape_departure`` from the others (leave one
    out), and a new clip is unfamiliar beyond ``SHAPE_FACTOR`` times their mean (at least ``SHAPE_FLOOR``).
    Measured on eleven real machines (``python -m anomaly realbench``, docs/real-benchmark.md).
    """

    def fit(self, clip_specs: Sequence[np.ndarray], domains: Sequence[str] | None = None) -> ShapeFamiliarity:
        super().fit(clip_specs)
        specs = [np.asarray(s, np.float64) for s in clip_specs]
        loo = []
        for i, spec in enumerate(specs):
            others = Familiarity(self.window_frames, self.spread_floor_db).fit(specs[:i] + specs[i + 1 :])
            loo.append(shape_departure(spec.mean(axis=1), others.mean_[0], others.spread_[0]))
        self.threshold_ = SHAPE_FACTOR * max(float(np.mean(loo)), SHAPE_FLOOR)
        return self

    def statistic(self, spec_db: np.ndarray) -> float:
        """The clip's shape departure over the threshold (above 1: unfamiliar)."""
        envelope = np.asarray(spec_db, np.float64).mean(axis=1)
        return shape_departure(envelope, self.mean_[0], self.spread_[0]) / self.threshold_

    def judge(self, statistic: float, score_ratio: float = 0.0) -> bool:
        """Against the user's own normals a high score is a fault of that machine: only the shape counts."""
        return statistic <= 1.0

    def to_arrays(self, prefix: str = "familiar_") -> dict[str, np.ndarray]:
        return super().to_arrays(prefix) | {f"{prefix}threshold": np.asarray(self.threshold_)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "familiar_") -> ShapeFamiliarity:
        self = cls(int(arrays[f"{prefix}window_frames"]))
        self.mean_ = np.asarray(arrays[f"{prefix}mean"], np.float64)
        self.spread_ = np.asarray(arrays[f"{prefix}spread"], np.float64)
        self.domains_ = [str(d) for d in arrays[f"{prefix}domains"]]
        self.threshold_ = float(arrays[f"{prefix}threshold"])
        return self
