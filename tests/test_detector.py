"""The detector end to end on the real (tiny) Keras model: windows, clicks, batches, calibration, maps."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from anomaly.detector import MIN_CALIBRATION_CLIPS, Detector
from anomaly.errors import AudioInputError
from anomaly.features import windows
from anomaly.images import log_mel_to_image
from anomaly.scorers.window import cross_fitted_scores
from anomaly.scoring import VERDICTS


def normal_clip(corpus, domain="source"):
    return sorted((corpus / "test").glob(f"*_{domain}_test_normal_*"))[0]


def test_analysis_fields(tiny_detector, tiny_corpus):
    result = tiny_detector.analyze(normal_clip(tiny_corpus), explain=True)
    assert result.label in VERDICTS
    assert result.score == pytest.approx(result.window_scores.max())
    assert len(result.window_scores) == len(result.window_times_s) == 9
    assert 0.0 <= result.percentile <= 100.0
    assert result.log_mel.shape == result.anomaly_map.shape == (128, 313)
    assert (result.anomaly_map >= 0).all()
    assert result.model["source"] == "local"
    out = result.to_json()
    assert set(out) == {
        "file", "score", "label", "familiar", "compared_with", "percentile", "thresholds", "windows",
        "model", "departures", "notes",
    }
    assert out["familiar"] is True and "advice" not in out


def test_a_50ms_click_moves_the_score(tiny_detector, tiny_corpus, tmp_path):
    y, sr = sf.read(normal_clip(tiny_corpus), dtype="float32")
    n = int(0.05 * sr)
    start = int(6.3 * sr)
    rng = np.random.default_rng(0)
    click = y.copy()
    click[start : start + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.01 * sr))
    sf.write(tmp_path / "click.wav", click, sr, subtype="PCM_16")
    sf.write(tmp_path / "clean.wav", y, sr, subtype="PCM_16")
    clean = tiny_detector.analyze(tmp_path / "clean.wav")
    clicked = tiny_detector.analyze(tmp_path / "click.wav")
    # One click lifts the clip above every held-out normal clip of the model.
    assert clicked.score > max(clean.score, tiny_detector.normal_scores.max())
    # The loudest window is one that contains the click.
    hot = clicked.window_times_s[np.argmax(clicked.window_scores)]
    assert hot <= 6.3 <= hot + tiny_detector.params.window_seconds
    # Windows that do not contain the click do not move.
    far = clicked.window_times_s + tiny_detector.params.window_seconds < 6.2
    np.testing.assert_allclose(clicked.window_scores[far], clean.window_scores[far], rtol=1e-3)


def test_image_input_scores_like_the_audio(tiny_detector, tiny_corpus):
    clip = normal_clip(tiny_corpus)
    audio = tiny_detector.analyze(clip, explain=True)
    image = log_mel_to_image(audio.log_mel, tiny_detector.params)
    from_image = tiny_detector.analyze_image(image, name="spec.png")
    # 8-bit quantisation of a 120 dB range costs a little precision, not the decision.
    assert from_image.score == pytest.approx(audio.score, rel=0.1)


def test_batch_keeps_going_past_bad_files(tiny_detector, tiny_corpus, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    good = sorted((tiny_corpus / "test").glob("*.wav"))[:3]
    results = tiny_detector.analyze_many([good[0], bad, good[1], good[2]])
    assert isinstance(results[1], AudioInputError) and "notes.wav" in str(results[1])
    for path, r in zip([good[0], good[1], good[2]], [results[0], results[2], results[3]], strict=True):
        single = tiny_detector.analyze(path)
        assert r.score == pytest.approx(single.score, rel=1e-4)


def test_threshold_override_changes_only_the_decision(tiny_detector, tiny_corpus):
    clip = normal_clip(tiny_corpus)
    base = tiny_detector.analyze(clip)
    strict = tiny_detector.with_thresholds(maintenance=base.score / 2, severe=base.score * 0.9)
    r = strict.analyze(clip)
    assert r.score == pytest.approx(base.score) and r.label == "SEVERE ANOMALY"
    assert tiny_detector.thresholds == base.thresholds  # the original is untouched


def test_calibration_refits_on_user_clips(tiny_detector, tiny_corpus):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:6]
    cal = tiny_detector.calibrate(normals)
    assert cal.n_clips == 6 and cal.meta["rough"] is True
    assert cal.meta["method"] == "reference" and cal.scorer.reference is not None
    assert cal.meta["domains"] == ["user"]
    assert len(cal.normal_scores) == 6
    adapted = tiny_detector.with_calibration(cal)
    assert adapted.thresholds == cal.thresholds
    assert adapted.model_info["calibration"]["n_clips"] == 6
    assert tiny_detector.calibration is None


def test_calibration_needs_enough_usable_clips(tiny_detector, tiny_corpus, tmp_path):
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    normals = sorted((tiny_corpus / "train").glob("*source*"))[: MIN_CALIBRATION_CLIPS - 1]
    with pytest.raises(AudioInputError, match=f"at least {MIN_CALIBRATION_CLIPS}"):
        tiny_detector.calibrate([*normals, bad])


def test_cross_fitting_never_scores_a_clip_with_its_own_fit():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(4, 5)) for _ in range(8)]
    # An outlier clip scores high only if it was left out of its own fit.
    clips[3] = clips[3] + 25.0
    scores = cross_fitted_scores(clips, np.array(["user"] * 8), n_components=3, folds=4)
    assert scores.argmax() == 3 and scores[3] > 3 * np.median(scores)


def test_hand_set_thresholds_must_be_ordered(tiny_detector):
    with pytest.raises(ValueError):
        tiny_detector.with_thresholds(maintenance=5.0, severe=4.0)


def test_detector_keeps_working_after_an_error(tiny_detector, tiny_corpus, tmp_path):
    bad = tmp_path / "short.wav"
    sf.write(bad, np.full(1600, 0.1, np.float32), 16000)
    with pytest.raises(AudioInputError, match="short.wav"):
        tiny_detector.analyze(bad)
    assert tiny_detector.analyze(normal_clip(tiny_corpus)).label in VERDICTS


def test_load_reads_bundle_from_environment(tiny_bundle, monkeypatch):
    monkeypatch.setenv("ANOMALY_BUNDLE", str(tiny_bundle))
    assert Detector.load().bundle.path == tiny_bundle


def test_batch_scores_equal_the_all_at_once_pass(tiny_detector, tiny_corpus):
    """Streaming files through in groups gives the scores of scoring each file on its own."""
    files = sorted((tiny_corpus / "test").glob("*.wav"))[:12]
    streamed = tiny_detector.analyze_many(files)
    for result, path in zip(streamed, files, strict=True):
        alone = tiny_detector.analyze(path)
        np.testing.assert_allclose(result.window_scores, alone.window_scores, rtol=1e-5)
        assert result.label == alone.label and result.notes == alone.notes


def test_a_long_batch_holds_a_few_files_at_a_time(tiny_detector, tmp_path):
    import tracemalloc

    rng = np.random.default_rng(3)
    path = tmp_path / "two_minutes.wav"
    sf.write(path, rng.normal(0, 0.05, 16000 * 120).astype(np.float32), 16000, subtype="PCM_16")
    spec = tiny_detector.log_mel_of(path)
    per_file = spec.nbytes + windows(spec, tiny_detector.params).nbytes  # about 6 MB

    def peak_of(n_files: int) -> tuple[int, list]:
        tracemalloc.start()
        try:
            results = tiny_detector.analyze_many([path] * n_files)
            return tracemalloc.get_traced_memory()[1], results
        finally:
            tracemalloc.stop()

    few, _ = peak_of(8)
    many, results = peak_of(32)
    assert len({round(r.score, 6) for r in results}) == 1
    # Decoding and the FFT cost the same for 8 files as for 32; holding every file's log-mel and windows,
    # as the batch did before, would add 24 x per_file. The peak itself varies by a few files' worth with
    # how the decoding threads overlap the network's passes (measured: up to 6 x per_file).
    assert many < few + 8 * per_file, (few / 2**20, many / 2**20, per_file / 2**20)
