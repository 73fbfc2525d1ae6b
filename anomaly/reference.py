"""What "normal" means after adapting: a reference fitted on a user's own normal recordings.

The bundled model knows only the synthetic gearbox it was trained on. Adapting to a real machine fits a
``Reference`` on a handful of its normal recordings instead, and that reference scores new recordings.
It was chosen by measurement on seven real machines (``python -m anomaly realbench``, see
``docs/real-benchmark.md``), picking by the worst machine, not the mean:

- **Blocks.** Each segment of a recording (about as long as the calibration clips, at most 10 s) is
  summarised from its log-mel power spectrogram by a few blocks: ``pmean`` (power averaged over the segment,
  then in dB: loud events count, which a mean of decibels hides), ``dbmean`` (mean of the decibels),
  ``dbstd`` (spread of each band over time), ``dbmax`` (loudest frame per band) and ``level`` (overall
  power in dB). ``level`` depends on microphone gain and distance: record from the same spot with the same
  gain.
- **One distance per block, in the full standardised space.** Each block is standardised on the
  calibration segments (spreads floored at ``STD_FLOOR`` of their median) and scored by a Ledoit-Wolf
  Mahalanobis distance (``"mahalanobis"``) or by the distance to the nearest calibration segment
  (``"nearest"``). No PCA cut: with ten clips a PCA keeps only the directions those clips span, and a new
  anomaly lives in the others.
- **Scores on one scale.** Each block's distance is divided by the mean distance of the calibration clips
  scored leave-one-clip-out, so 1.0 is a typical new normal clip in every block; the blocks are then
  averaged (``"mean"``) or the largest is taken (``"max"``). A recording's score is the largest score of
  its segments.
- **Thresholds that admit how little they rest on.** From the leave-one-out scores of the calibration clips,
  log-normal upper prediction bounds (Student's t, ``sqrt(1 + 1/K)``, a spread pooled with a prior one):
  NEEDS MAINTENANCE above the bound one new normal clip in ten would pass, SEVERE ANOMALY above one in a
  hundred. With three clips these bounds are wide, and they narrow as clips are added.

Fitted state is plain arrays (``to_arrays`` / ``from_arrays``), saved in calibration files without
pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.covariance import LedoitWolf

from anomaly.scoring import Thresholds

CLIP_BLOCKS = ("pmean", "dbmean", "dbstd", "dbmax", "level")
DISTANCES = ("mahalanobis", "nearest")
FUSIONS = ("mean", "max")
# Chosen by the worst real machine at the benchmark's K (docs/real-benchmark.md).
DEFAULT_BLOCKS = ("pmean", "dbmean", "level")
DEFAULT_DISTANCE = "mahalanobis"
DEFAULT_FUSION = "mean"
# No spread is taken below this share of the block's median spread: a band that barely moved on a few
# clips cannot blow rounding noise up into a score.
STD_FLOOR = 0.1
# Longest segment scored as one piece; longer recordings are scored in overlapping segments.
MAX_SEGMENT_SECONDS = 10.0
MAINTENANCE_COVERAGE = 0.9
SEVERE_COVERAGE = 0.99
# Prior spread of the log score of a new normal clip, worth PRIOR_DOF clips (see prediction_thresholds).
PRIOR_LOG_SPREAD = 0.3
PRIOR_DOF = 4


@dataclass(frozen=True)
class Recipe:
    """Which blocks, which distance and which fusion a reference uses."""

    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    distance: str = DEFAULT_DISTANCE
    fusion: str = DEFAULT_FUSION

    def __post_init__(self):
        unknown = [b for b in self.blocks if b not in CLIP_BLOCKS]
        if unknown or not self.blocks:
            raise ValueError(f"unknown blocks {unknown}; choose from {list(CLIP_BLOCKS)}")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; choose from {list(DISTANCES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {list(FUSIONS)}")

    @property
    def name(self) -> str:
        return f"{'+'.join(self.blocks)} / {self.distance} / {self.fusion}"

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "distance": self.distance, "fusion": self.fusion}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        return cls(tuple(data["blocks"]), str(data["distance"]), str(data["fusion"]))


def block_features(spec_db: np.ndarray, blocks: Sequence[str]) -> dict[str, np.ndarray]:
    """One vector per block for a log-mel segment ``(n_mels, frames)`` in dB."""
    db = np.asarray(spec_db, dtype=np.float64)
    power = None
    out: dict[str, np.ndarray] = {}
    for block in blocks:
        if block in ("pmean", "level") and power is None:
            power = np.power(10.0, db / 10.0)
        if block == "pmean":
            out[block] = 10.0 * np.log10(power.mean(axis=1) + 1e-12)
        elif block == "dbmean":
            out[block] = db.mean(axis=1)
        elif block == "dbstd":
            out[block] = db.std(axis=1)
        elif block == "dbmax":
            out[block] = db.max(axis=1)
        elif block == "level":
            out[block] = np.array([10.0 * np.log10(power.sum(axis=0).mean() + 1e-12)])
        else:
            raise ValueError(f"unknown block {block!r}")
    return out


def segment_starts(n_frames: int, segment_frames: int) -> np.ndarray:
    """First frame of each segment: one segment for a recording no longer than ``segment_frames``, else
    segments every half segment plus one aligned with the end."""
    if n_frames <= segment_frames:
        return np.zeros(1, dtype=int)
    last = n_frames - segment_frames
    starts = list(range(0, last + 1, max(1, segment_frames // 2)))
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts, dtype=int)


def segment_features(
    spec_db: np.ndarray, segment_frames: int, blocks: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Block features of each segment of one log-mel: ``({block: (n_segments, dim)}, starts)``."""
    starts = segment_starts(spec_db.shape[1], segment_frames)
    per = [block_features(spec_db[:, s : s + segment_frames], blocks) for s in starts]
    return {b: np.stack([p[b] for p in per]) for b in blocks}, starts


class BlockDistance:
    """Distance of one block's vectors to the calibration vectors, in the standardised space."""

    def __init__(self, distance: str = DEFAULT_DISTANCE):
        self.distance = distance

    def fit(self, X: np.ndarray) -> BlockDistance:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        spread = X.std(axis=0)
        floor = STD_FLOOR * float(np.median(spread)) if spread.size else 0.0
        # A block that did not move at all (one calibration segment, or one-dimensional level on
        # identical clips) still needs a unit: 0.5 dB, about what a clip-to-clip change is worth.
        self.scale_ = np.maximum(spread, max(floor, 0.5 if len(X) < 2 else 1e-6))
        Z = (X - self.mean_) / self.scale_
        if self.distance == "nearest":
            self.references_ = Z
            self.precision_ = np.zeros((0, 0))
        else:
            self.references_ = np.zeros((0, Z.shape[1]))
            if len(Z) >= 2:
                self.precision_ = LedoitWolf(assume_centered=True).fit(Z).get_precision()
            else:
                self.precision_ = np.eye(Z.shape[1])
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Root-mean-square distance per dimension (so blocks of any size speak the same unit)."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        dim = Z.shape[1]
        if self.distance == "nearest":
            d2 = ((Z[:, None, :] - self.references_[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        else:
            d2 = np.einsum("ij,jk,ik->i", Z, self.precision_, Z)
        return np.sqrt(np.maximum(d2, 0.0) / dim)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}mean": self.mean_,
            f"{prefix}scale": self.scale_,
            f"{prefix}precision": self.precision_,
            f"{prefix}references": self.references_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, distance: str) -> BlockDistance:
        self = cls(distance)
        self.mean_ = np.asarray(arrays[f"{prefix}mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays[f"{prefix}scale"], dtype=np.float64)
        self.precision_ = np.asarray(arrays[f"{prefix}precision"], dtype=np.float64)
        self.references_ = np.asarray(arrays[f"{prefix}references"], dtype=np.float64)
        return self


def prediction_thresholds(normal_scores: np.ndarray) -> Thresholds:
    """Log-normal upper prediction bounds for the score of one new normal clip.

    With K leave-one-out scores, the bound that a new normal clip stays under with probability ``q`` is
    ``exp(m + t_q(dof) * s * sqrt(1 + 1/K))``, m the mean of the log scores. The spread ``s`` pools the
    clips' own spread with a prior one (``PRIOR_LOG_SPREAD``, worth ``PRIOR_DOF`` clips), so that three
    clips that happen to agree cannot give thresholds pinned to their scores, and three that happen to
    disagree cannot give absurd ones; ``dof = K - 1 + PRIOR_DOF``. Few clips give wide thresholds, many
    give thresholds set by the clips themselves.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores) & (scores > 0)]
    if len(scores) < 2:
        raise ValueError("need scores of at least two normal clips to set thresholds")
    logs = np.log(scores)
    n = len(logs)
    dof = n - 1 + PRIOR_DOF
    spread = float(np.sqrt(((n - 1) * logs.var(ddof=1) + PRIOR_DOF * PRIOR_LOG_SPREAD**2) / dof))
    width = spread * np.sqrt(1.0 + 1.0 / n)
    maintenance = float(np.exp(logs.mean() + stats.t.ppf(MAINTENANCE_COVERAGE, dof) * width))
    severe = float(np.exp(logs.mean() + stats.t.ppf(SEVERE_COVERAGE, dof) * width))
    return Thresholds(maintenance, severe, "lognormal prediction bound", MAINTENANCE_COVERAGE, SEVERE_COVERAGE)


class Reference:
    """A user's normal recordings, as a scorer: ``fit`` on log-mels of normal clips, ``score`` new ones.

    Parameters
    ----------
    recipe : blocks, distance and fusion (``Recipe``); the default was chosen on real machines.
    frame_seconds : seconds per log-mel frame (``FeatureParams.frame_seconds``).

    Examples
    --------
    >>> ref = Reference(frame_seconds=0.032).fit([spec1, spec2, spec3])  # doctest: +SKIP
    >>> scores, starts = ref.segment_scores(spec_new)  # doctest: +SKIP
    """

    def __init__(self, recipe: Recipe | None = None, *, frame_seconds: float):
        self.recipe = recipe or Recipe()
        self.frame_seconds = float(frame_seconds)

    # --- fitting --------------------------------------------------------------------------------

    def fit(self, clip_specs: Sequence[np.ndarray]) -> Reference:
        """Fit on the log-mels (dB) of normal clips, one array ``(n_mels, frames)`` per clip."""
        if len(clip_specs) < 2:
            raise ValueError("need at least two normal clips to fit a reference")
        frames = [s.shape[1] for s in clip_specs]
        cap = max(1, int(round(MAX_SEGMENT_SECONDS / self.frame_seconds)))
        self.segment_frames_ = int(min(np.median(frames), cap))
        blocks = self.recipe.blocks
        per_clip = [segment_features(s, self.segment_frames_, blocks)[0] for s in clip_specs]
        groups = np.concatenate([[i] * len(p[blocks[0]]) for i, p in enumerate(per_clip)])
        self.distances_: dict[str, BlockDistance] = {}
        loo = np.zeros((len(blocks), len(clip_specs)))
        for j, block in enumerate(blocks):
            X = np.concatenate([p[block] for p in per_clip])
            self.distances_[block] = BlockDistance(self.recipe.distance).fit(X)
            for i in range(len(clip_specs)):
                held = groups == i
                loo[j, i] = BlockDistance(self.recipe.distance).fit(X[~held]).score(X[held]).max()
        self.block_scales_ = np.maximum(loo.mean(axis=1), 1e-9)
        self.normal_scores_ = self._fuse(loo / self.block_scales_[:, None])
        # The band a normal clip's spectrum spans, for the explanation and the familiarity check.
        spectra = np.stack([block_features(s, ("pmean",))["pmean"] for s in clip_specs])
        self.spectrum_mean_ = spectra.mean(axis=0)
        self.spectrum_low_ = spectra.min(axis=0)
        self.spectrum_high_ = spectra.max(axis=0)
        self.frame_spread_ = np.stack([np.asarray(s, np.float64).std(axis=1) for s in clip_specs]).mean(axis=0)
        self.n_clips_ = len(clip_specs)
        return self

    def _fuse(self, normalised: np.ndarray) -> np.ndarray:
        return normalised.mean(axis=0) if self.recipe.fusion == "mean" else normalised.max(axis=0)

    @property
    def thresholds(self) -> Thresholds:
        return prediction_thresholds(self.normal_scores_)

    # --- scoring --------------------------------------------------------------------------------

    def segment_scores(self, spec_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score of each segment of one log-mel, and each segment's first frame."""
        feats, starts = segment_features(spec_db, self.segment_frames_, self.recipe.blocks)
        per_block = np.stack(
            [self.distances_[b].score(feats[b]) / self.block_scales_[j] for j, b in enumerate(self.recipe.blocks)]
        )
        return self._fuse(per_block), starts

    def score(self, spec_db: np.ndarray) -> float:
        """A recording's score: its largest segment score (1.0 = a typical new normal clip)."""
        return float(self.segment_scores(spec_db)[0].max())

    def anomaly_map(self, spec_db: np.ndarray) -> np.ndarray:
        """How far each time-frequency cell lies outside the normal clips, in their spreads over time.

        0 inside mean +- 2 spreads of that band on the normal clips; above it, the excess in spreads.
        """
        db = np.asarray(spec_db, dtype=np.float64)
        spread = np.maximum(self.frame_spread_, 0.5)[:, None]
        excess = np.abs(db - self.spectrum_mean_[:, None]) / spread - 2.0
        return np.maximum(excess, 0.0).astype(np.float32)

    def departures(self, spec_db: np.ndarray, band_hz: np.ndarray, *, top: int = 3, min_db: float = 3.0):
        """Where the clip's spectrum leaves the band its normal clips span: up to ``top`` regions, largest
        first, each ``{"hz": centre, "db": signed excess}`` (positive: louder than any normal clip)."""
        spectrum = block_features(spec_db, ("pmean",))["pmean"]
        above = spectrum - self.spectrum_high_
        below = spectrum - self.spectrum_low_
        excess = np.where(above > 0, above, np.where(below < 0, below, 0.0))
        found = []
        order = np.argsort(-np.abs(excess))
        taken = np.zeros(len(excess), bool)
        for i in order:
            if abs(excess[i]) < min_db or len(found) >= top:
                break
            if taken[max(0, i - 4) : i + 5].any():
                continue  # the same region as a larger departure
            taken[i] = True
            found.append({"hz": float(band_hz[i]), "db": round(float(excess[i]), 1)})
        return found

    # --- persistence ----------------------------------------------------------------------------

    def to_arrays(self, prefix: str = "ref_") -> dict[str, np.ndarray]:
        arrays = {
            f"{prefix}block_scales": self.block_scales_,
            f"{prefix}normal_scores": self.normal_scores_,
            f"{prefix}spectrum_mean": self.spectrum_mean_,
            f"{prefix}spectrum_low": self.spectrum_low_,
            f"{prefix}spectrum_high": self.spectrum_high_,
            f"{prefix}frame_spread": self.frame_spread_,
            f"{prefix}segment_frames": np.asarray(self.segment_frames_),
            f"{prefix}n_clips": np.asarray(self.n_clips_),
        }
        for block, dist in self.distances_.items():
            arrays.update(dist.to_arrays(f"{prefix}{block}_"))
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], recipe: Recipe, *, frame_seconds: float, prefix: str = "ref_"
    ) -> Reference:
        self = cls(recipe, frame_seconds=frame_seconds)
        self.block_scales_ = np.asarray(arrays[f"{prefix}block_scales"], dtype=np.float64)
        self.normal_scores_ = np.asarray(arrays[f"{prefix}normal_scores"], dtype=np.float64)
        self.spectrum_mean_ = np.asarray(arrays[f"{prefix}spectrum_mean"], dtype=np.float64)
        self.spectrum_low_ = np.asarray(arrays[f"{prefix}spectrum_low"], dtype=np.float64)
        self.spectrum_high_ = np.asarray(arrays[f"{prefix}spectrum_high"], dtype=np.float64)
        self.frame_spread_ = np.asarray(arrays[f"{prefix}frame_spread"], dtype=np.float64)
        self.segment_frames_ = int(arrays[f"{prefix}segment_frames"])
        self.n_clips_ = int(arrays[f"{prefix}n_clips"])
        self.distances_ = {
            b: BlockDistance.from_arrays(arrays, f"{prefix}{b}_", recipe.distance) for b in recipe.blocks
        }
        if len(self.block_scales_) != len(recipe.blocks):
            raise ValueError("the reference's arrays do not match its recipe")
        return self
