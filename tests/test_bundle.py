"""The artifact bundle: round trip, checksums, format version, preprocessing and calibration checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomaly.bundle import (
    BUNDLE_FILES,
    FORMAT_VERSION,
    load_bundle,
    read_config,
    verify_bundle,
    write_config,
)
from anomaly.calibration import load_calibration
from anomaly.detector import Detector
from anomaly.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_config_is_complete(tiny_bundle):
    config = verify_bundle(tiny_bundle)
    assert config["format_version"] == FORMAT_VERSION
    assert set(config["files"]) == set(BUNDLE_FILES)
    assert config["labels"] == ["NORMAL", "NEEDS MAINTENANCE", "SEVERE ANOMALY"]
    assert config["preprocessing"]["n_fft"] == 1024 and config["preprocessing"]["hop_length"] == 512
    assert config["preprocessing"]["n_mels"] == 128
    for key in ("keras", "numpy", "scikit-learn", "python"):
        assert key in config["libraries"]
    assert config["training"]["synthetic"] is True
    assert config["training"]["n_holdout"] >= 2
    t = config["thresholds"]
    assert 0 < t["maintenance"] < t["severe"] and t["method"] == "gamma"


def test_thresholds_come_from_held_out_scores(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    held = bundle.arrays["calibration_scores"]
    assert len(held) == bundle.config["training"]["n_holdout"]
    # The 0.9 gamma quantile sits inside the range of the held-out normal scores, not at a constant.
    assert held.min() < bundle.thresholds.maintenance < held.max() * 1.5


def test_round_trip_scores_identically(tiny_bundle, bundle_copy, tiny_corpus):
    clip = sorted((tiny_corpus / "test").glob("*anomaly*"))[0]
    a = Detector.load(tiny_bundle).analyze(clip)
    b = Detector.load(bundle_copy).analyze(clip)
    assert a.score == pytest.approx(b.score, rel=1e-6)
    np.testing.assert_allclose(a.window_scores, b.window_scores, rtol=1e-6)


def test_encoder_is_small_and_named(tiny_bundle):
    assert (tiny_bundle / "encoder.keras").stat().st_size < 3_000_000
    encoder, decoder = load_bundle(tiny_bundle).models()
    assert encoder.name == "encoder" and decoder.name == "decoder"


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_tampered_file_is_refused(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name} does not match its checksum"):
        load_bundle(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "encoder.keras").unlink()
    with pytest.raises(BundleError, match="encoder.keras is missing"):
        load_bundle(bundle_copy)


def test_missing_folder_and_config_are_refused(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match="no config.json"):
        load_bundle(tmp_path)


def test_wrong_format_version_is_refused(bundle_copy):
    config = read_config(bundle_copy)
    config["format_version"] = FORMAT_VERSION + 1
    (bundle_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="format version"):
        load_bundle(bundle_copy)


def test_preprocessing_that_does_not_fit_the_model_is_refused(bundle_copy):
    config = read_config(bundle_copy)
    config["preprocessing"]["n_mels"] = 64
    write_config(bundle_copy, config)  # checksums are fine: only the meaning changed
    with pytest.raises(BundleError, match="preprocessing does not match the model"):
        Detector.load(bundle_copy)


def test_calibration_from_another_model_is_refused(tiny_bundle, tiny_corpus, tmp_path):
    detector = Detector.load(tiny_bundle)
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:5]
    path = detector.calibrate(normals).save(tmp_path / "cal.npz")
    assert load_calibration(path, detector.bundle).n_clips == 5

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    config = read_config(other)
    config["files"]["encoder.keras"] = "0" * 64  # pretend another encoder
    (other / "config.json").write_text(json.dumps(config))
    from anomaly.bundle import Bundle

    impostor = Bundle(path=other, config=config, arrays=detector.bundle.arrays)
    with pytest.raises(BundleError, match="made with another model"):
        load_calibration(path, impostor)


def test_garbage_calibration_file_is_refused(tiny_bundle, tmp_path):
    path = tmp_path / "cal.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(BundleError, match="not a calibration file"):
        load_calibration(path, load_bundle(tiny_bundle))


# --- arrays from untrusted files ------------------------------------------------------------------------


def _npz(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_read_npz_checked_reads_plain_arrays(tmp_path):
    from anomaly.safenpz import read_npz_checked

    path = _npz(tmp_path / "ok.npz", a=np.arange(6.0).reshape(2, 3), meta=np.asarray('{"k": 1}'))
    arrays = read_npz_checked(path, max_bytes=1 << 20, max_elements=100)
    np.testing.assert_array_equal(arrays["a"], np.arange(6.0).reshape(2, 3))
    assert str(arrays["meta"]) == '{"k": 1}'


def test_a_huge_array_is_refused_from_its_header_before_loading(tmp_path, monkeypatch):
    from anomaly.safenpz import read_npz_checked

    # 2 GB of zeros compresses to about 2 MB: write its header and a little data, as an attacker would.
    path = tmp_path / "huge.npz"
    import zipfile

    with zipfile.ZipFile(path, "w") as archive, archive.open("scorer_components.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (16384, 16384)}
        )
        fh.write(b"\0" * 1024)
    loaded = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: loaded.append(1))
    with pytest.raises(
        BundleError, match=r"268,435,456 values \(2,048 MB in memory\).*at most 8,000,000 values"
    ):
        read_npz_checked(path, max_bytes=64 << 20, max_elements=8_000_000)
    assert not loaded


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda p: p.write_bytes(b"not an npz"), "not an .npz archive"),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p),
            "not an .npz",
        ),
        (lambda p: _npz(p, a=np.array([{"x": 1}], dtype=object)), "holds object values"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 100), "not a calibration file"),
    ],
    ids=["text", "npy", "pickle", "broken-zip"],
)
def test_garbage_npz_is_not_a_calibration_file(tmp_path, tiny_bundle, make, phrase):
    path = tmp_path / "cal.npz"
    make(path)
    with pytest.raises(BundleError, match=phrase) as info:
        load_calibration(path, load_bundle(tiny_bundle))
    message = str(info.value)
    assert message.startswith("cal.npz: not a calibration file of this tool")
    assert "pickle" not in message and str(tmp_path) not in message


def test_a_zip_holding_other_files_is_not_a_calibration_file(tmp_path):
    import zipfile

    from anomaly.safenpz import read_npz_checked

    path = tmp_path / "cal.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(BundleError, match="holds 'notes.txt', not an array"):
        read_npz_checked(path, max_bytes=1 << 20, max_elements=100)


# --- the config, validated as a whole -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"sr": 0}, "sr must be a whole number from 4000 to 192000 Hz, not 0"),
        ({"sr": -1}, "sr must be a whole number from 4000 to 192000 Hz, not -1"),
        ({"sr": "abc"}, "sr must be a whole number from 4000 to 192000 Hz, not 'abc'"),
        ({"sr": 16000.5}, "not 16000.5"),
        ({"hop_length": 0}, "hop_length must be a whole number from 1 to 1024 (n_fft), not 0"),
        ({"hop_length": 2048}, "hop_length must be a whole number from 1 to 1024 (n_fft)"),
        ({"n_fft": 2**30}, "n_fft must be a whole number from 16 to 16384, not 1073741824"),
        ({"n_mels": 0}, "n_mels must be a whole number from 1 to 512"),
        ({"fmax": 12000.0}, "need 0 <= fmin < fmax <= sr / 2 = 8000 Hz"),
        ({"window_frames": 0}, "window_frames must be a whole number from 1 to 100000, not 0"),
        ({"db_min": 30.0}, "db_min (30.0) must be below db_max (20.0)"),
        ({"power": None}, "power must be a finite number, not None"),
        ({"hop": 512}, "unknown preprocessing parameters: ['hop']"),
    ],
)
def test_invalid_preprocessing_is_refused_in_one_line(bundle_copy, change, phrase):
    config = read_config(bundle_copy)
    config["preprocessing"].update(change)
    write_config(bundle_copy, config)  # valid checksums: only the meaning is wrong
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_copy)
    message = str(info.value)
    assert "config.json has invalid preprocessing: " in message and phrase in message, message
    assert "\n" not in message


def test_every_problem_is_named_at_once(bundle_copy):
    config = read_config(bundle_copy)
    config["preprocessing"].update(sr=0, hop_length=0)
    write_config(bundle_copy, config)
    with pytest.raises(BundleError, match="sr must be .*; hop_length must be"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("section", "value", "phrase"),
    [
        ("embedding", {}, "invalid embedding: missing 'recipe'"),
        ("embedding", {"recipe": ["nonsense"]}, "unknown embedding blocks"),
        ("preprocessing", [], "preprocessing must be a JSON object"),
        ("thresholds", {"maintenance": "x"}, "invalid thresholds"),
        ("training", None, "training must be a JSON object"),
        ("metrics", [1], "metrics must be a JSON object"),
        ("embedding", None, "embedding must be a JSON object"),
    ],
)
def test_invalid_sections_are_refused(bundle_copy, section, value, phrase):
    config = read_config(bundle_copy)
    config[section] = value
    write_config(bundle_copy, config)
    with pytest.raises(BundleError, match=phrase):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("content", ["[1, 2]", "null", "3"])
def test_a_config_that_is_not_an_object_is_one_line(bundle_copy, content):
    (bundle_copy / "config.json").write_text(content)
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_copy)
    assert str(refused.value) == f"{bundle_copy}/config.json: config.json holds {content}, not a JSON object"


def test_a_bundle_without_an_embedding_recipe_verifies_but_does_not_load(bundle_copy):
    config = read_config(bundle_copy)
    del config["embedding"]
    write_config(bundle_copy, config)
    verify_bundle(bundle_copy)  # enough to resolve or publish it
    with pytest.raises(BundleError, match="config.json has no 'embedding' section"):
        load_bundle(bundle_copy)


# --- calibration values: every calibration is validated on load ----------------------------------------


def _hostile_cases(calibration: Path) -> dict[str, tuple[dict, dict]]:
    """Name -> (meta changes, array changes) of hostile variants of a real calibration file."""
    with np.load(calibration) as data:
        arrays = {k: data[k] for k in data.files}
    # The arrays a distance multiplies by (a precision, or the nearest-neighbour references): the first that
    # holds numbers for the default recipe.
    precision = next(k for k in arrays if k.endswith(("precision", "references", "inner")) and arrays[k].size)
    scale = next(k for k in arrays if k.endswith("scale"))
    nan_precision = arrays[precision].copy()
    nan_precision.flat[0] = np.nan
    return {
        "nan-precision": ({}, {precision: nan_precision}),
        "zero-scale": ({}, {scale: np.zeros_like(arrays[scale])}),
        "huge-thresholds": ({"thresholds": {"maintenance": 1e306, "severe": 1e307}}, {}),
        "inverted-thresholds": ({"thresholds": {"maintenance": 2.0, "severe": 1.0}}, {}),
        "nan-threshold": ({"thresholds": {"maintenance": float("nan"), "severe": 2.0}}, {}),
        "control-name": ({"name": "Pump\x1b[31m 3"}, {}),
        "long-name": ({"name": "x" * 500}, {}),
        "clips": ({"n_clips": -4}, {}),
        "markdown-date": ({"created": "[click](http://evil.example)"}, {}),
    }


HOSTILE = [
    "nan-precision",
    "zero-scale",
    "huge-thresholds",
    "inverted-thresholds",
    "nan-threshold",
    "control-name",
    "long-name",
    "clips",
    "markdown-date",
]


@pytest.mark.parametrize("case", HOSTILE)
def test_impossible_calibration_values_are_refused_in_one_line(
    case, tiny_bundle, tiny_calibration, hostile_calibration, tmp_path
):
    from anomaly.errors import CalibrationFileError

    bundle = load_bundle(tiny_bundle)
    assert load_calibration(tiny_calibration, bundle).n_clips == 5  # the file it is made from is fine
    meta, arrays = _hostile_cases(tiny_calibration)[case]
    path = hostile_calibration(tiny_calibration, tmp_path / f"{case}.npz", meta=meta, **arrays)
    with pytest.raises(CalibrationFileError) as refused:
        load_calibration(path, bundle)
    message = str(refused.value)
    assert message.startswith(f"{case}.npz: not a usable calibration: ") and "\n" not in message


def test_a_plain_name_with_markup_characters_loads(tiny_bundle, tiny_calibration, hostile_calibration, tmp_path):
    """Markup is shown as text by the page (tests/test_ui.py), not refused: names are the user's own words."""
    name = "Pump [3](http://x.example) *east* <hall>"
    path = hostile_calibration(tiny_calibration, tmp_path / "named.npz", meta={"name": name})
    assert load_calibration(path, load_bundle(tiny_bundle)).meta["name"] == name


def test_an_npz_with_200000_members_is_refused_before_any_is_read(tmp_path):
    import time
    import zipfile

    from anomaly.safenpz import CALIBRATION_MAX_MEMBERS, read_npz_checked

    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for i in range(200_000):
            archive.writestr(f"a{i}.npy", b"")
    started = time.perf_counter()
    with pytest.raises(BundleError, match=f"arrays; at most {CALIBRATION_MAX_MEMBERS} are read"):
        read_npz_checked(path, max_bytes=2**26, max_elements=10**7)
    assert time.perf_counter() - started < 1.0
