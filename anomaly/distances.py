"""One distance per block of a reference (``anomaly.reference``), in the block's standardised space."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage

DISTANCES = ("mahalanobis", "nearest")
DEFAULT_DISTANCE = "nearest"
# No spread is taken below this share of the block's median spread: a band that barely moved on a few
# clips cannot blow rounding noise up into a score.
STD_FLOOR = 0.1


class BlockDistance:
    """Distance of one block's vectors to the calibration vectors, in the standardised space.

    ``"mahalanobis"``: Ledoit-Wolf shrinkage covariance of the standardised calibration vectors (centred on
    their mean): a dense precision when there are more vectors than dimensions, else its low-rank Woodbury
    form (the same distances).
    ``"nearest"``: distance to the nearest calibration vector.
    """

    def __init__(self, distance: str = DEFAULT_DISTANCE, *, min_scale: float = 1e-6):
        self.distance = distance
        self.min_scale = float(min_scale)

    def fit(self, X: np.ndarray) -> BlockDistance:
        X = np.asarray(X, dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        spread = X.std(axis=0)
        floor = STD_FLOOR * float(np.median(spread)) if spread.size else 0.0
        # A block that did not move at all (one calibration segment, or one-dimensional level on
        # identical clips) still needs a unit: 0.5 dB, about what a clip-to-clip change is worth.
        self.scale_ = np.maximum(spread, max(floor, 0.5 if len(X) < 2 else self.min_scale))
        Z = (X - self.mean_) / self.scale_
        self.precision_ = np.zeros((0, 0))
        self.inner_ = np.zeros((0, 0))
        self.lowrank_ = np.zeros(0)
        self.references_ = np.zeros((0, Z.shape[1]))
        if self.distance == "nearest":
            self.references_ = Z
        elif len(Z) < 2:
            self.precision_ = np.eye(Z.shape[1])
        elif len(Z) > Z.shape[1]:
            self.precision_ = LedoitWolf(assume_centered=True).fit(Z).get_precision()
        else:
            # Fewer vectors than dimensions (the usual case: a few clips, 128 bands or a 2049-bin fine
            # spectrum). Sklearn's Ledoit-Wolf covariance is Sigma = a I + b Z'Z with a = shrinkage * mu and
            # b = (1 - shrinkage) / n; by Woodbury its inverse needs only the n x n inner matrix: the same
            # distances as the dense precision, without a d x d eigendecomposition per fit (33 MB and
            # seconds for the fine spectrum) and without storing d x d numbers.
            n, d = Z.shape
            shrinkage = float(ledoit_wolf_shrinkage(Z, assume_centered=True))
            mu = float(np.square(Z).sum() / (n * d))
            a = max(shrinkage * mu, 1e-9 * max(mu, 1e-12))
            b = (1.0 - shrinkage) / n
            self.references_ = Z
            self.lowrank_ = np.array([a, b])
            self.inner_ = np.linalg.inv(np.eye(n) + (b / a) * (Z @ Z.T))
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        """Root-mean-square distance per dimension (so blocks of any size speak the same unit)."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        dim = Z.shape[1]
        if self.distance == "nearest":
            d2 = ((Z[:, None, :] - self.references_[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        elif self.lowrank_.size:
            a, b = self.lowrank_
            projected = Z @ self.references_.T
            d2 = (Z * Z).sum(axis=1) / a - (b / a**2) * np.einsum("ij,jk,ik->i", projected, self.inner_, projected)
        else:
            d2 = np.einsum("ij,jk,ik->i", Z, self.precision_, Z)
        return np.sqrt(np.maximum(d2, 0.0) / dim)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}mean": self.mean_,
            f"{prefix}scale": self.scale_,
            f"{prefix}precision": self.precision_,
            f"{prefix}references": self.references_,
            f"{prefix}inner": self.inner_,
            f"{prefix}lowrank": self.lowrank_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str, distance: str) -> BlockDistance:
        self = cls(distance)
        self.mean_ = np.asarray(arrays[f"{prefix}mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays[f"{prefix}scale"], dtype=np.float64)
        self.precision_ = np.asarray(arrays[f"{prefix}precision"], dtype=np.float64)
        self.references_ = np.asarray(arrays[f"{prefix}references"], dtype=np.float64)
        # Files written before the low-rank form hold only the dense precision.
        self.inner_ = np.asarray(arrays.get(f"{prefix}inner", np.zeros((0, 0))), dtype=np.float64)
        self.lowrank_ = np.asarray(arrays.get(f"{prefix}lowrank", np.zeros(0)), dtype=np.float64)
        return self
