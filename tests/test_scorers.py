"""Every registered scorer (anomaly.scorers.SCORERS) behind the one interface: fitted, saved, loaded and used
by every path the Detector offers, with the same answers. A new scorer added to the registry is tested here
without a line of test code."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.calibration import load_calibration
from anomaly.scorers import SCORERS, Scorer, decide


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:6]
    scored = sorted((tiny_corpus / "test").glob("*source*"))[:4]
    return normals, scored


@pytest.mark.parametrize("method", sorted(SCORERS))
def test_a_scorer_round_trips_and_every_path_agrees(method, tiny_detector, clips, tmp_path):
    normals, scored = clips
    calibration = tiny_detector.calibrate(normals, method=method, name="Gearbox 7")
    assert isinstance(calibration.scorer, Scorer) and calibration.method == method
    loaded = load_calibration(calibration.save(tmp_path / f"{method}.npz"), tiny_detector.bundle)
    assert type(loaded.scorer) is type(calibration.scorer) and loaded.meta["name"] == "Gearbox 7"

    fitted, reread = tiny_detector.with_calibration(calibration), tiny_detector.with_calibration(loaded)
    one_by_one = [fitted.analyze(f) for f in scored]
    batch = reread.analyze_many(scored)
    for alone, in_batch in zip(one_by_one, batch, strict=True):
        assert in_batch.score == pytest.approx(alone.score, rel=1e-5)
        assert (in_batch.label, in_batch.familiar) == (alone.label, alone.familiar)
        np.testing.assert_allclose(in_batch.window_times_s, alone.window_times_s)
        assert in_batch.compared_with.startswith("Gearbox 7: your machine (6 normal recordings")
    # The picture path: explain adds the map, and the score stays the same.
    explained = fitted.analyze(scored[0], explain=True)
    assert explained.anomaly_map is not None and explained.anomaly_map.shape == explained.log_mel.shape
    assert explained.score == pytest.approx(one_by_one[0].score, rel=1e-5)


def test_decide_follows_the_thresholds_it_is_given(tiny_detector):
    scorer = tiny_detector.scorer
    t = scorer.thresholds
    below, between, above = (t.maintenance * 0.5, (t.maintenance + t.severe) / 2, t.severe * 1.5)
    assert [decide(s, scorer, t, 0.0).label for s in (below, between, above)] == [
        "NORMAL",
        "NEEDS MAINTENANCE",
        "SEVERE ANOMALY",
    ]
    # A recording halfway to unfamiliar: familiar at its calibrated severe score, unfamiliar at many times
    # it (bundled model only: there a huge score speaks of another machine), whatever thresholds are set by
    # hand: they move the alarm levels, not what the sound is like.
    half = 0.5 * 0.5  # half of familiarity.THRESHOLD
    low = t.override(t.maintenance / 20, t.severe / 20)
    for thresholds in (t, low):
        assert decide(t.severe, scorer, thresholds, half).familiar
        far = decide(t.severe * 20, scorer, thresholds, half)
        assert (far.familiar, far.label, far.advice) == (False, "UNFAMILIAR", scorer.advice)
    assert decide(t.severe, scorer, low, half).label == "SEVERE ANOMALY"
