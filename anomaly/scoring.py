"""Scoring and calibration: PCA, shrinkage covariance per reference domain, Mahalanobis, thresholds.

``MahalanobisScorer`` reads like a scikit-learn estimator: ``fit`` learns a PCA on all normal embeddings,
then one Gaussian (Ledoit-Wolf shrinkage covariance) per reference domain in PCA space; ``score_samples``
returns the Mahalanobis distance to the nearest domain (DCASE's "selective Mahalanobis"). Fitted state is
plain arrays (``to_arrays`` / ``from_arrays``), saved as ``.npz`` without pickle.

``gamma_thresholds`` turns the scores of held-out normal clips into thresholds: NEEDS MAINTENANCE above the 0.9
quantile of a gamma distribution fitted to those scores (the DCASE baseline convention), SEVERE ANOMALY
above its 0.999 quantile (about one normal clip in a thousand). Both quantiles are stored with the
thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.covariance import LedoitWolf, ShrunkCovariance
from sklearn.decomposition import PCA

LABELS = ("NORMAL", "NEEDS MAINTENANCE", "SEVERE ANOMALY")
# The verdict on a recording that does not sound like what the score is measured against (another machine,
# or the same one recorded elsewhere): its score says "unlike the reference", not how worn the machine is,
# so it gets no severity (``anomaly.scorers.decide``).
UNFAMILIAR = "UNFAMILIAR"
VERDICTS = (*LABELS, UNFAMILIAR)
MAINTENANCE_QUANTILE = 0.9
SEVERE_QUANTILE = 0.999


class MahalanobisScorer:
    """PCA, then one shrinkage Gaussian per domain; the score is the distance to the nearest domain.

    Parameters
    ----------
    n_components : PCA size; capped by the number of samples and features.
    """

    def __init__(self, n_components: int = 64):
        self.n_components = n_components

    def fit(
        self,
        X: np.ndarray,
        domains: np.ndarray | list[str] | None = None,
        groups: np.ndarray | list[int] | None = None,
    ) -> MahalanobisScorer:
        """Fit PCA on all rows, then one Gaussian per domain.

        ``groups`` names the clip each row (window) comes from. When given, each domain's distances are
        divided by the median distance of its own normal windows scored by Gaussians fitted without their
        clip (k-fold over clips), so that a domain known from a handful of clips and one known from
        hundreds speak the same unit: 1.0 is a typical normal window, whatever its domain.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError("need at least two embeddings to fit the scorer")
        domains = np.asarray(["source"] * len(X) if domains is None else domains)
        n_comp = int(min(self.n_components, X.shape[1], len(X) - 1))
        pca = PCA(n_components=n_comp, svd_solver="full").fit(X)
        self.pca_mean_ = pca.mean_
        self.components_ = pca.components_
        Z = self.transform(X)
        self.domains_ = sorted(set(domains.tolist()))
        locations, precisions, scales = [], [], []
        for domain in self.domains_:
            Zd = Z[domains == domain]
            location, precision = _gaussian(Zd, Z)
            locations.append(location)
            precisions.append(precision)
            scale = 1.0
            if groups is not None:
                scale = _held_out_median(Zd, np.asarray(groups)[domains == domain], Z)
            scales.append(scale)
        self.locations_ = np.stack(locations)
        self.precisions_ = np.stack(precisions)
        self.scales_ = np.asarray(scales, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project embeddings into PCA space."""
        return (np.asarray(X, dtype=np.float64) - self.pca_mean_) @ self.components_.T

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each embedding to each domain (divided by the domain's scale),
        shape ``(n, n_domains)``."""
        Z = self.transform(X)
        out = np.empty((len(Z), len(self.domains_)))
        for j in range(len(self.domains_)):
            diff = Z - self.locations_[j]
            d2 = np.einsum("ij,jk,ik->i", diff, self.precisions_[j], diff)
            out[:, j] = np.sqrt(np.maximum(d2, 0.0)) / self.scales_[j]
        return out

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Distance to the nearest reference domain: higher means more anomalous."""
        return self.distances(X).min(axis=1)

    def to_arrays(self, prefix: str = "scorer_") -> dict[str, np.ndarray]:
        return {
            f"{prefix}pca_mean": self.pca_mean_,
            f"{prefix}components": self.components_,
            f"{prefix}locations": self.locations_,
            f"{prefix}precisions": self.precisions_,
            f"{prefix}domains": np.asarray(self.domains_, dtype=str),
            f"{prefix}scales": self.scales_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "scorer_") -> MahalanobisScorer:
        scorer = cls(n_components=int(arrays[f"{prefix}components"].shape[0]))
        scorer.pca_mean_ = np.asarray(arrays[f"{prefix}pca_mean"], dtype=np.float64)
        scorer.components_ = np.asarray(arrays[f"{prefix}components"], dtype=np.float64)
        scorer.locations_ = np.asarray(arrays[f"{prefix}locations"], dtype=np.float64)
        scorer.precisions_ = np.asarray(arrays[f"{prefix}precisions"], dtype=np.float64)
        scorer.domains_ = [str(d) for d in arrays[f"{prefix}domains"]]
        scales = arrays.get(f"{prefix}scales")
        scorer.scales_ = np.ones(len(scorer.domains_)) if scales is None else np.asarray(scales, np.float64)
        return scorer


def _gaussian(Zd: np.ndarray, Z_all: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Location and precision of one domain's Ledoit-Wolf Gaussian."""
    if len(Zd) >= 2:
        cov = LedoitWolf().fit(Zd)
        return cov.location_, cov.get_precision()
    # One sample gives no spread: borrow the pooled covariance around that sample.
    cov = ShrunkCovariance(shrinkage=1.0).fit(Z_all)
    return Zd.mean(axis=0), cov.get_precision()


def clip_folds(clips: np.ndarray, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold over clips: ``(fitting clips, held-out clips)`` for each fold, every ``folds``-th clip held
    out together (at least 2 folds, at most one per clip). The one split behind every held-out score."""
    clips = np.asarray(clips)
    folds = max(2, min(folds, len(clips)))
    return [(np.setdiff1d(clips, clips[k::folds]), clips[k::folds]) for k in range(folds)]


def _held_out_median(Zd: np.ndarray, groups: np.ndarray, Z_all: np.ndarray, folds: int = 5) -> float:
    """Median distance of a domain's windows to Gaussians fitted without their clip (k-fold over clips)."""
    clips = np.unique(groups)
    if len(clips) < 2:
        return 1.0
    distances = []
    for _, test_clips in clip_folds(clips, folds):
        held = np.isin(groups, test_clips)
        location, precision = _gaussian(Zd[~held], Z_all)
        diff = Zd[held] - location
        distances.append(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, precision, diff), 0.0)))
    median = float(np.median(np.concatenate(distances)))
    return median if median > 0 else 1.0


@dataclass(frozen=True)
class Thresholds:
    """Score cut-offs: ``maintenance`` starts NEEDS MAINTENANCE, ``severe`` starts SEVERE ANOMALY."""

    maintenance: float
    severe: float
    method: str = "gamma"
    maintenance_quantile: float | None = MAINTENANCE_QUANTILE
    severe_quantile: float | None = SEVERE_QUANTILE

    def __post_init__(self):
        if not (np.isfinite(self.maintenance) and np.isfinite(self.severe)):
            raise ValueError("thresholds must be finite numbers")
        if not 0 <= self.maintenance < self.severe:
            raise ValueError(
                f"thresholds must satisfy 0 <= maintenance < severe (got {self.maintenance:g}, {self.severe:g})"
            )

    def label(self, score: float) -> str:
        if not np.isfinite(score):
            # A NaN compares false with everything and would read as NORMAL: refuse it instead.
            raise ValueError(f"cannot label a non-finite score ({score})")
        if score >= self.severe:
            return LABELS[2]
        if score >= self.maintenance:
            return LABELS[1]
        return LABELS[0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(**data)

    def override(self, maintenance: float | None = None, severe: float | None = None) -> Thresholds:
        """Thresholds set by hand; the ones not given stay as they are."""
        if maintenance is None and severe is None:
            return self
        return Thresholds(
            maintenance=self.maintenance if maintenance is None else float(maintenance),
            severe=self.severe if severe is None else float(severe),
            method="manual",
            maintenance_quantile=None,
            severe_quantile=None,
        )


def gamma_thresholds(
    normal_scores: np.ndarray,
    maintenance_quantile: float = MAINTENANCE_QUANTILE,
    severe_quantile: float = SEVERE_QUANTILE,
) -> Thresholds:
    """Thresholds from scores of held-out normal clips via a gamma fit (location fixed at 0).

    Fixing the location keeps the fit stable with the handful of clips a user may give.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if len(scores) < 2:
        raise ValueError("need scores of at least two held-out normal clips to set thresholds")
    if np.ptp(scores) <= 1e-9 * max(1.0, abs(scores.mean())):
        scores = scores + np.linspace(-1e-6, 1e-6, len(scores)) * max(1.0, abs(scores.mean()))
    shape, loc, scale = stats.gamma.fit(np.maximum(scores, 1e-9), floc=0.0)
    maintenance = float(stats.gamma.ppf(maintenance_quantile, shape, loc=loc, scale=scale))
    severe = float(stats.gamma.ppf(severe_quantile, shape, loc=loc, scale=scale))
    return Thresholds(maintenance, severe, "gamma", maintenance_quantile, severe_quantile)


def percentile(score: float, normal_scores: np.ndarray) -> float:
    """Share (in %) of held-out normal clips that scored lower than ``score``."""
    normal_scores = np.asarray(normal_scores)
    if len(normal_scores) == 0:
        return float("nan")
    return float(100.0 * np.mean(normal_scores < score))
