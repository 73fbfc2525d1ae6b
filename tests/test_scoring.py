"""Scorer math, selective (min over domains) scoring, gamma thresholds and percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from anomaly.scoring import LABELS, MahalanobisScorer, Thresholds, gamma_thresholds, percentile


def test_distance_matches_direct_numpy_computation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    scorer = MahalanobisScorer(n_components=8).fit(X)
    queries = rng.normal(size=(10, 20)) * 3

    # The same pipeline written out by hand with scikit-learn and scipy.
    pca = PCA(n_components=8, svd_solver="full").fit(X)
    lw = LedoitWolf().fit(pca.transform(X))
    precision = np.linalg.inv(lw.covariance_)
    expected = [mahalanobis(pca.transform(q[None])[0], lw.location_, precision) for q in queries]
    np.testing.assert_allclose(scorer.score_samples(queries), expected, rtol=1e-6)


def test_score_is_distance_to_nearest_domain():
    rng = np.random.default_rng(1)
    source = rng.normal(0, 1, size=(400, 6))
    target = rng.normal(8, 1, size=(40, 6))
    X = np.vstack([source, target])
    domains = ["source"] * 400 + ["target"] * 40
    scorer = MahalanobisScorer(n_components=6).fit(X, domains)
    assert scorer.domains_ == ["source", "target"]
    q = np.vstack([rng.normal(0, 1, (5, 6)), rng.normal(8, 1, (5, 6)), rng.normal(-8, 1, (5, 6))])
    d = scorer.distances(q)
    np.testing.assert_allclose(scorer.score_samples(q), d.min(axis=1))
    assert (d[:5, 0] < d[:5, 1]).all() and (d[5:10, 1] < d[5:10, 0]).all()
    # Points of either domain score low; points far from both score high.
    assert scorer.score_samples(q[:10]).max() < scorer.score_samples(q[10:]).min()


def test_state_round_trips_through_plain_arrays(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 12))
    scorer = MahalanobisScorer(n_components=5).fit(X, ["a"] * 50 + ["b"] * 50)
    np.savez(tmp_path / "s.npz", **scorer.to_arrays())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as data:
        back = MahalanobisScorer.from_arrays(dict(data))
    np.testing.assert_allclose(back.score_samples(X[:7]), scorer.score_samples(X[:7]))
    assert back.domains_ == ["a", "b"]


def test_single_clip_domain_borrows_pooled_covariance():
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(size=(50, 4)), [[5.0, 5.0, 5.0, 5.0]]])
    scorer = MahalanobisScorer(n_components=4).fit(X, ["source"] * 50 + ["user"])
    assert np.isfinite(scorer.score_samples(X)).all()


def test_thresholds_recover_a_known_gamma():
    shape, scale = 9.0, 0.7
    scores = stats.gamma.rvs(shape, scale=scale, size=5000, random_state=4)
    t = gamma_thresholds(scores)
    assert t.maintenance == pytest.approx(stats.gamma.ppf(0.9, shape, scale=scale), rel=0.02)
    assert t.severe == pytest.approx(stats.gamma.ppf(0.999, shape, scale=scale), rel=0.03)
    assert t.maintenance_quantile == 0.9 and t.severe_quantile == 0.999
    assert t.severe > t.maintenance * 1.2


def test_calibration_with_few_clips_is_finite_and_ordered():
    t = gamma_thresholds([4.1, 4.6, 5.2])
    assert 0 < t.maintenance < t.severe and np.isfinite(t.severe)
    with pytest.raises(ValueError):
        gamma_thresholds([4.0])


def test_labels_follow_thresholds():
    t = Thresholds(5.0, 8.0)
    assert [t.label(s) for s in (4.99, 5.0, 7.99, 8.0, 100)] == [
        LABELS[0],
        LABELS[1],
        LABELS[1],
        LABELS[2],
        LABELS[2],
    ]


def test_override_and_validation():
    t = Thresholds(5.0, 8.0)
    o = t.override(maintenance=6.0)
    assert (o.maintenance, o.severe, o.method) == (6.0, 8.0, "manual")
    assert t.override() is t
    with pytest.raises(ValueError, match="maintenance < severe"):
        t.override(maintenance=9.0)
    with pytest.raises(ValueError):
        Thresholds(float("nan"), 3.0)


def test_percentile_is_share_of_lower_normal_scores():
    normals = np.arange(1, 11, dtype=float)
    assert percentile(0.5, normals) == 0.0
    assert percentile(5.5, normals) == 50.0
    assert percentile(100, normals) == 100.0


def test_domain_scales_put_domains_on_one_unit():
    """A domain known from a few clips scores its new normals like the well-known domain does."""
    rng = np.random.default_rng(5)

    def clips(n_clips, centre, start=0):
        # Windows of one clip share that clip's operating point (an offset), as real recordings do.
        X = np.vstack([centre + rng.normal(size=10) + 0.5 * rng.normal(size=(9, 10)) for _ in range(n_clips)])
        return X, np.repeat(np.arange(start, start + n_clips), 9)

    Xs, gs = clips(200, 0.0)
    Xt, gt = clips(6, 6.0, start=1000)
    X = np.vstack([Xs, Xt])
    domains = ["source"] * len(Xs) + ["target"] * len(Xt)
    plain = MahalanobisScorer(n_components=10).fit(X, domains)
    scaled = MahalanobisScorer(n_components=10).fit(X, domains, groups=np.r_[gs, gt])
    assert np.all(plain.scales_ == 1.0)
    assert scaled.scales_[1] > scaled.scales_[0] > 1.0
    new_source, _ = clips(40, 0.0)
    new_target, _ = clips(40, 6.0)
    # Without scales the few-clip domain's new normals look far more anomalous than the source's.
    assert np.median(plain.score_samples(new_target)) > 1.5 * np.median(plain.score_samples(new_source))
    ratio = np.median(scaled.score_samples(new_target)) / np.median(scaled.score_samples(new_source))
    assert 0.8 < ratio < 1.25
    # Typical normal windows score about 1.
    assert 0.8 < np.median(scaled.score_samples(new_source)) < 1.25
