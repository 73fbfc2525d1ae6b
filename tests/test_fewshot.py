"""Few-shot adaptation: the protocol's bookkeeping, calibration files that carry their own recipe and
standardiser, and adaptation that helps on a synthetic machine unlike the training corpus."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomaly import fewshot
from anomaly.calibration import load_calibration
from anomaly.cli import main
from anomaly.dcase import format_name
from anomaly.detector import MIN_CALIBRATION_CLIPS
from anomaly.embedding import CALIBRATION_RECIPE
from anomaly.errors import AudioInputError, BundleError, CalibrationError
from anomaly.fewshot import evaluate_fewshot, parse_k, protocol_files, split_fewshot, spread_order


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# --- the protocol's bookkeeping (file names only, no audio) ----------------------------------------------


def test_k_values():
    assert [parse_k(k) for k in ("5", " 05", "HALF", "all", 3)] == ["5", "5", "half", "all", "3"]
    for bad in ("0", "-2", "1.5", "most", ""):
        with pytest.raises(ValueError, match="positive whole number"):
            parse_k(bad)


def test_first_k_normals_of_each_domain_and_never_scored(tmp_path):
    for domain in ("source", "target"):
        for i in (3, 0, 2, 1, 4):  # written out of order: the split sorts by name
            _touch(tmp_path / format_name(domain, "test", "normal", i, {"volt": 1.0}))
            _touch(tmp_path / format_name(domain, "test", "anomaly", i, {"volt": 1.0}))
    pool, labelled = protocol_files(tmp_path)
    assert len(labelled) == 20 and len(pool) == 10
    split = split_fewshot(pool, labelled, 2)
    assert split.n_calibration == {"source": 2, "target": 2}
    assert sorted(p.name for p in split.calibration) == sorted(
        format_name(d, "test", "normal", i, {"volt": 1.0}) for d in ("source", "target") for i in (0, 1)
    )
    assert not set(split.calibration) & set(split.scored)
    assert len(split.scored) == 16

    half = split_fewshot(pool, labelled, "half")
    assert half.n_calibration == {"source": 2, "target": 2}  # half of 5, rounded down


def test_dcase_layout_calibrates_on_train_and_plain_folders_work(tmp_path):
    dcase = tmp_path / "dcase"
    for i in range(6):
        _touch(dcase / "train" / f"normal_id_00_{i:08d}.wav")
    for i in range(3):
        _touch(dcase / "test" / f"normal_id_00_{i:08d}.wav")
        _touch(dcase / "test" / f"anomaly_id_00_{i:08d}.wav")
    pool, labelled = protocol_files(dcase)
    assert all(p.parent.name == "train" for p in pool) and all(p.parent.name == "test" for p in labelled)
    split = split_fewshot(pool, labelled, "all")
    assert len(split.calibration) == 6 and len(split.scored) == 6  # every test clip is scored

    plain = tmp_path / "plain"
    for i in range(4):
        _touch(plain / "normal" / f"{i:08d}.wav")
        _touch(plain / "abnormal" / f"{i:08d}.wav")
    pool, labelled = protocol_files(plain)
    split = split_fewshot(pool, labelled, "half")
    assert [p.name for p in split.calibration] == ["00000000.wav", "00000001.wav"]
    assert all(p.parent.name == "normal" for p in split.calibration)
    assert len(split.scored) == 6 and not set(split.calibration) & set(split.scored)


def test_protocol_scores_everything_but_the_calibration_clips(tiny_detector, tiny_corpus, monkeypatch):
    scored: list = []
    real_score_clips = fewshot.score_clips

    def spy(detector, files, windows_by_file):
        scored.append(list(files))
        return real_score_clips(detector, files, windows_by_file)

    monkeypatch.setattr(fewshot, "score_clips", spy)
    test_dir = tiny_corpus / "test"  # no train/ here: the normals come from the test clips themselves
    reports = evaluate_fewshot(tiny_detector, test_dir, ["3", "half"])
    assert list(reports) == ["3", "half"]
    pool, labelled = protocol_files(test_dir)
    for k, files in zip(("3", "half"), scored, strict=True):
        split = split_fewshot(pool, labelled, k)
        assert sorted(files) == sorted(split.scored)
        assert not set(files) & set(split.calibration)
        for domain in ("source", "target"):
            entry = reports[k][domain]
            assert entry["n_calibration"] == 3
            assert entry["n_normal"] == 6 - 3 and entry["n_anomaly"] == 12
            assert 0.0 <= entry["auc"] <= 1.0 and 0.0 <= entry["pauc"] <= 1.0


def test_too_few_clips_for_the_protocol_is_a_clear_error(tiny_detector, tiny_corpus):
    with pytest.raises(AudioInputError, match=f"at least {MIN_CALIBRATION_CLIPS}"):
        evaluate_fewshot(tiny_detector, tiny_corpus / "test", ["1"])  # 1 per domain: 2 clips in all


def test_cli_fewshot_json_is_keyed_by_k(tiny_bundle, tiny_corpus, capsys):
    code = main(
        [
            "evaluate",
            str(tiny_corpus / "test"),
            "--bundle",
            str(tiny_bundle),
            "--fewshot",
            "3",
            "half",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) == {"3", "half"}
    assert {"auc", "pauc", "n_calibration"} <= set(report["3"]["source"])

    assert (
        main(["evaluate", str(tiny_corpus / "test"), "--bundle", str(tiny_bundle), "--recipe", "logmel_std"])
        == 2
    )
    assert "--recipe goes with --fewshot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(tiny_corpus / "test"), "--fewshot", "some"])
    assert "positive whole number" in capsys.readouterr().err


# --- calibration files with their own recipe and standardiser ------------------------------------------


def test_recipe_and_standardiser_travel_with_the_calibration(tiny_detector, tiny_corpus, tmp_path):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:4]
    # Without a recipe, the window method refits on CALIBRATION_RECIPE.
    cal = tiny_detector.calibrate(normals, method="window")
    assert cal.scorer.recipe == CALIBRATION_RECIPE
    assert cal.scorer.recipe != tuple(tiny_detector.bundle.config["embedding"]["recipe"])
    assert cal.scorer.standardizer is not None and cal.meta["rough"] is True

    loaded = load_calibration(cal.save(tmp_path / "cal.npz"), tiny_detector.bundle)
    assert loaded.scorer.recipe == cal.scorer.recipe
    np.testing.assert_allclose(loaded.scorer.standardizer["embed_mean"], cal.scorer.standardizer["embed_mean"])
    np.testing.assert_allclose(loaded.scorer.standardizer["embed_std"], cal.scorer.standardizer["embed_std"])

    clip = sorted((tiny_corpus / "test").glob("*anomaly*"))[0]
    adapted = tiny_detector.with_calibration(loaded)
    assert adapted.scorer.recipe == CALIBRATION_RECIPE
    assert adapted.analyze(clip).score == pytest.approx(
        tiny_detector.with_calibration(cal).analyze(clip).score
    )
    assert adapted.model_info["calibration"]["recipe"] == list(CALIBRATION_RECIPE)
    # Dropping the calibration brings back the model's own recipe and standardiser.
    back = adapted.with_calibration(None)
    assert back.scorer.recipe == tiny_detector.scorer.recipe
    assert back.analyze(clip).score == pytest.approx(tiny_detector.analyze(clip).score)


def test_calibration_with_the_model_standardiser_stays_a_version_1_file(tiny_detector, tiny_corpus, tmp_path):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:4]
    cal = tiny_detector.calibrate(normals, method="window", recipe=tiny_detector.scorer.recipe, refit_standardizer=False)
    path = cal.save(tmp_path / "cal.npz")
    with np.load(path) as data:
        assert "embed_mean" not in data.files
    assert load_calibration(path, tiny_detector.bundle).scorer.standardizer is None
    with pytest.raises(CalibrationError, match="standardiser"):
        tiny_detector.calibrate(normals, method="window", recipe=("logmel_std",), refit_standardizer=False)

    # A recipe other than the model's needs the calibration's own standardiser.
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["recipe"] = ["logmel_std"]
    np.savez(tmp_path / "odd.npz", meta=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(BundleError, match="embedding recipe"):
        load_calibration(tmp_path / "odd.npz", tiny_detector.bundle)
    meta["recipe"] = ["no_such_block"]
    np.savez(tmp_path / "bad.npz", meta=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(BundleError, match="no valid embedding recipe"):
        load_calibration(tmp_path / "bad.npz", tiny_detector.bundle)


def test_reconstruction_error_block(tiny_detector, tiny_corpus):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:4]
    cal = tiny_detector.calibrate(normals, method="window", recipe=("recon_mean",))
    assert cal.scorer.mahalanobis.components_.shape[1] == tiny_detector.params.n_mels
    clip = sorted((tiny_corpus / "test").glob("*anomaly*"))[0]
    assert np.isfinite(tiny_detector.with_calibration(cal).analyze(clip).score)


def test_calibrating_on_three_clips_works_and_says_it_is_rough(tiny_bundle, tiny_corpus, tmp_path, caplog):
    train = sorted((tiny_corpus / "train").glob("*source*"))
    out = tmp_path / "cal.npz"
    with caplog.at_level(logging.INFO, logger="anomaly"):
        assert main(["calibrate", *map(str, train[:3]), "--out", str(out), "--bundle", str(tiny_bundle)]) == 0
    assert "thresholds are wide" in caplog.text
    assert main(["calibrate", *map(str, train[:2]), "--out", str(out), "--bundle", str(tiny_bundle)]) == 1


# --- adaptation that helps --------------------------------------------------------------------------------


def test_calibration_adapts_to_a_machine_unlike_the_training_corpus(tiny_detector, tmp_path, monkeypatch):
    """A slow, unloaded gearbox with a fan nearby, in a room of its own: far outside both synthetic domains.

    Out of the box every clip of it is far from the training sounds and the score says little about
    faults; calibrated on eight of its normal clips, the faults stand out.
    """
    from anomaly import synth

    monkeypatch.setitem(synth.DOMAINS, "plant", replace(synth.DOMAINS["source"], room_seed=78, fan_db=-10.0))
    kinds = list(synth.FAULTS)

    def clip(name, label, seed, index=0):
        fault = kinds[index % len(kinds)] if label == "anomaly" else None
        wave, _ = synth.synthesize_clip("plant", label, seed, fault=fault, severity=0.6, volt=0.5, wt=0)
        return synth.write_clip(tmp_path / name, wave)

    calibration = [clip(f"cal_{i}.wav", "normal", 100 + i) for i in range(8)]
    normals = [clip(f"normal_{i}.wav", "normal", 200 + i) for i in range(10)]
    faults = [clip(f"fault_{i}.wav", "anomaly", 200 + i, i) for i in range(10)]
    labels = [0] * len(normals) + [1] * len(faults)

    def auc(detector) -> float:
        return roc_auc_score(labels, [r.score for r in detector.analyze_many(normals + faults)])

    before = auc(tiny_detector)
    after = auc(tiny_detector.with_calibration(tiny_detector.calibrate(calibration)))
    assert after >= 0.85 and after >= before + 0.25, (before, after)


def test_spread_order_covers_the_range_first():
    assert spread_order(8) == [0, 7, 3, 5, 1, 2, 4, 6]
    assert sorted(spread_order(12)) == list(range(12)) and spread_order(1) == [0] and spread_order(0) == []


def test_a_grouped_split_never_scores_a_take_or_speed_it_calibrated_on(tmp_path):
    """Desk-fan style takes (``<state>_<take>_<piece>``) and motor speeds (``rpmNNNN``): calibration clips
    come from takes or speeds spread over the range, and no clip of those is scored."""
    import re

    takes = [f"T{t:02d}" for t in range(6)]
    pool = [tmp_path / "normal" / f"on_{t}_{k}.wav" for t in takes for k in range(4)]
    labelled = pool + [tmp_path / "abnormal" / f"tapping_X{t}_{k}.wav" for t in range(2) for k in range(3)]
    take_of = lambda p: re.match(r"^[^_]+_([^_]+)_\d+$", p.stem).group(1)  # noqa: E731
    split = split_fewshot(pool, labelled, 5, group_of=take_of)
    # Takes in spread order (first, last, middle...): all four pieces of T00, then the first of T05.
    assert [p.stem for p in split.calibration] == ["on_T00_0", "on_T00_1", "on_T00_2", "on_T00_3", "on_T05_0"]
    assert {take_of(p) for p in split.scored if p.parent.name == "normal"} == {"T01", "T02", "T03", "T04"}
    assert sum(p.parent.name == "abnormal" for p in split.scored) == 6

    speeds = [1400, 1450, 1550, 1650, 1750, 1850, 1950, 2000]
    normals = [tmp_path / "normal" / f"rpm{s}.wav" for s in speeds]
    faults = [tmp_path / "abnormal" / f"rpm{s}.wav" for s in speeds[:6]]
    split = split_fewshot(normals, normals + faults, 3, group_of=lambda p: p.stem)
    assert [p.stem for p in split.calibration] == ["rpm1400", "rpm2000", "rpm1650"]
    scored = {(p.parent.name, p.stem) for p in split.scored}
    assert not any(stem in {"rpm1400", "rpm2000", "rpm1650"} for _, stem in scored)
    assert ("abnormal", "rpm1450") in scored and ("normal", "rpm1950") in scored
