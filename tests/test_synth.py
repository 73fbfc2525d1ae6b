"""Tests of the synthetic gearbox corpus: layout, names, format, determinism and the physics of the faults."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from anomaly import synth
from anomaly.dcase import list_audio, parse_name

ROOT = Path(__file__).resolve().parent.parent
SR = synth.SAMPLE_RATE
N_TRAIN, N_TEST = 3, 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus_a")
    synth.write_corpus(out, seed=3, n_train=N_TRAIN, n_test=N_TEST)
    return out


def _relative_files(folder: Path) -> list[Path]:
    return [p.relative_to(folder) for p in list_audio(folder)]


@functools.cache
def _normal_band_means_db(domain: str, seed: int, volt: float, wt: int) -> np.ndarray:
    return _band_means_db(synth.synthesize_clip(domain, "normal", seed, volt=volt, wt=wt)[0])


def _band_means_db(waveform: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=waveform, sr=SR, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
    return (10 * np.log10(mel + 1e-10)).mean(axis=1)


def _envelope_peak_ratio(waveform: np.ndarray, f_hz: float) -> float:
    """Peak of the envelope spectrum of the high-passed signal near ``f_hz`` over its median (5-100 Hz)."""
    sos = signal.butter(4, 1000.0, btype="highpass", fs=SR, output="sos")
    envelope = np.abs(signal.hilbert(signal.sosfilt(sos, waveform.astype(np.float64))))
    spectrum = np.abs(np.fft.rfft((envelope - envelope.mean()) * np.hanning(len(envelope))))
    freqs = np.fft.rfftfreq(len(envelope), 1 / SR)
    near = (freqs > 0.97 * f_hz) & (freqs < 1.03 * f_hz)
    reference = (freqs > 5) & (freqs < 100)
    return float(spectrum[near].max() / np.median(spectrum[reference]))


# ---------------------------------------------------------------------------------------------- layout


def test_layout_counts(corpus):
    train = list_audio(corpus / "train")
    test = list_audio(corpus / "test")
    n_target = synth.n_target_train(N_TRAIN)
    assert n_target == 3
    assert sum(parse_name(p).domain == "source" for p in train) == N_TRAIN
    assert sum(parse_name(p).domain == "target" for p in train) == n_target
    assert all(parse_name(p).label == "normal" for p in train)
    for domain in ("source", "target"):
        for label in ("normal", "anomaly"):
            hits = [p for p in test if parse_name(p).domain == domain and parse_name(p).label == label]
            assert len(hits) == N_TEST, (domain, label)
            assert sorted(parse_name(p).index for p in hits) == list(range(N_TEST))


@pytest.mark.parametrize(("n_train", "expected"), [(0, 0), (1, 3), (100, 3), (449, 4), (1000, 10)])
def test_target_train_count(n_train, expected):
    assert synth.n_target_train(n_train) == expected


def test_no_train_folder_and_every_fault_kind_in_test(tmp_path):
    n_test = len(synth.FAULTS)
    synth.write_corpus(tmp_path, seed=5, n_train=0, n_test=n_test)
    assert not (tmp_path / "train").exists()
    anomalies = [parse_name(p) for p in list_audio(tmp_path / "test") if parse_name(p).label == "anomaly"]
    for domain in ("source", "target"):
        kinds = sorted(info.fault for info in anomalies if info.domain == domain)
        assert kinds == sorted(synth.FAULTS)


def test_names_parse_back_to_attributes(corpus):
    for path in list_audio(corpus):
        info = parse_name(path)
        assert info.split == path.parent.name
        spec = synth.DOMAINS[info.domain]
        assert float(info.attributes["volt"]) in spec.volts
        assert int(info.attributes["wt"]) in spec.weights
        assert list(info.attributes)[:2] == ["volt", "wt"]
        if info.label == "anomaly":
            assert info.fault in synth.FAULTS
            assert path.stem.endswith(f"_fault_{info.fault}")
        else:
            assert info.fault is None


def test_audio_format(corpus):
    for path in list_audio(corpus):
        meta = sf.info(path)
        assert (meta.samplerate, meta.channels, meta.subtype, meta.format) == (SR, 1, "PCM_16", "WAV")
        assert meta.frames == 10 * SR


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_same_bytes(corpus, tmp_path):
    synth.write_corpus(tmp_path, seed=3, n_train=N_TRAIN, n_test=N_TEST)
    files = _relative_files(corpus)
    assert files == _relative_files(tmp_path)
    for name in files:
        assert (corpus / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_clips_do_not_depend_on_corpus_size(corpus, tmp_path):
    synth.write_corpus(tmp_path, seed=3, n_train=N_TRAIN - 1, n_test=0)
    smaller = _relative_files(tmp_path)
    assert len(smaller) == N_TRAIN - 1 + synth.n_target_train(N_TRAIN - 1)
    for name in smaller:
        assert (corpus / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_different_seed_gives_different_audio(corpus, tmp_path):
    synth.write_corpus(tmp_path, seed=4, n_train=N_TRAIN, n_test=N_TEST)

    def slot(path: Path) -> tuple:
        info = parse_name(path)
        return (info.split, info.domain, info.label, info.index)

    ours, theirs = sorted(list_audio(corpus), key=slot), sorted(list_audio(tmp_path), key=slot)
    assert [slot(p) for p in ours] == [slot(p) for p in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert not np.array_equal(sf.read(a)[0], sf.read(b)[0]), (a.name, b.name)


def test_examples_are_deterministic_and_are_the_bundled_files(tmp_path):
    written = synth.generate_examples(tmp_path / "a", seed=0)
    again = synth.generate_examples(tmp_path / "b", seed=0)

    assert [p.name for p in written] == [p.name for p in again]
    assert f"fault_{synth.MILD_EXAMPLE_FAULT}_mild.wav" in {p.name for p in written}
    for a, b in zip(written, again, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    # examples/ is exactly what the code writes, so regenerating it changes nothing.
    for path in written:
        assert path.read_bytes() == (ROOT / "examples" / path.name).read_bytes(), path.name


def test_the_mild_example_is_normal_source_with_a_milder_fault(tmp_path):
    synth.generate_examples(tmp_path, seed=5)
    normal, _ = sf.read(tmp_path / "normal_source.wav")
    mild, _ = sf.read(tmp_path / f"fault_{synth.MILD_EXAMPLE_FAULT}_mild.wav")
    severe, _ = sf.read(tmp_path / f"fault_{synth.MILD_EXAMPLE_FAULT}.wav")

    # The same machine, room and background: what is left after subtracting the normal clip is the fault.
    assert np.corrcoef(normal, mild)[0, 1] > 0.95
    residual = np.sqrt(np.mean((mild - normal) ** 2))
    assert 0.02 < residual / np.sqrt(np.mean(normal**2)) < 0.5
    # Milder: it raises the bands above the normal clip's far less than the clearly audible example does.
    base = _band_means_db(normal)
    assert 0.5 < (_band_means_db(mild) - base).max() < 0.5 * (_band_means_db(severe) - base).max()


def test_synthesize_clip_is_deterministic_and_seed_types_agree():
    a, attributes = synth.synthesize_clip("target", "anomaly", 12, duration_s=1.0)
    b, _ = synth.synthesize_clip("target", "anomaly", np.random.default_rng(12), duration_s=1.0)
    assert np.array_equal(a, b)
    assert attributes["fault"] in synth.FAULTS and a.dtype == np.float32 and a.shape == (SR,)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_corpus_and_reports_progress(tmp_path):
    out = tmp_path / "c"
    run = subprocess.run(
        [sys.executable, "-m", "anomaly", "synth", str(out), "--seed", "1", "--train", "2", "--test", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert len(list_audio(out / "train")) == 2 + 3
    assert len(list_audio(out / "test")) == 4
    assert "wrote 5 train and 4 test clips" in run.stderr
    assert run.stdout == ""


def test_cli_writes_examples(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "anomaly", "synth", str(tmp_path), "--examples", "--seed", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    expected = {"normal_source.wav", "normal_target.wav"} | {f"fault_{kind}.wav" for kind in synth.FAULTS}
    expected.add(f"fault_{synth.MILD_EXAMPLE_FAULT}_mild.wav")
    expected |= {"spectrogram_normal_source.png", "spectrogram_fault_tooth.png"}  # the image input's examples
    assert {p.name for p in tmp_path.iterdir()} == expected
    for path in tmp_path.glob("*.wav"):
        meta = sf.info(path)
        assert (meta.samplerate, meta.channels, meta.subtype, meta.frames) == (SR, 1, "PCM_16", 10 * SR)


# ---------------------------------------------------------------------------------------------- physics


@pytest.mark.parametrize("domain", ["source", "target"])
def test_level_near_real_recordings(domain):
    for seed in range(3):
        wave, _ = synth.synthesize_clip(domain, "normal", seed)
        rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
        assert 0.01 < rms < 0.04
        assert np.abs(wave).max() < 0.5
    for kind in synth.FAULTS:
        wave, _ = synth.synthesize_clip(domain, "anomaly", 0, fault=kind, severity=1.0)
        assert np.abs(wave).max() < 1.0


@pytest.mark.parametrize(
    ("domain", "volt", "wt"), [("source", 1.0, 0), ("source", 1.3, 100), ("target", 1.7, 180)]
)
def test_mesh_frequency_follows_voltage(domain, volt, wt):
    wave, _ = synth.synthesize_clip(domain, "normal", 21, volt=volt, wt=wt)
    expected = synth.PINION_TEETH * synth.rotation_frequency(volt, wt)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1 / SR)
    band = (freqs > 0.93 * expected) & (freqs < 1.07 * expected)
    peak = freqs[band][np.argmax(spectrum[band])]
    assert abs(peak - expected) < 0.01 * expected
    # The line stands well above its surroundings: it is a tone, not noise.
    assert spectrum[band].max() > 10 * np.median(spectrum[band])


@pytest.mark.parametrize(("domain", "volt", "wt"), [("source", 1.1, 30), ("target", 1.6, 150)])
def test_tooth_fault_modulates_at_rotation_frequency(domain, volt, wt):
    f_r = synth.rotation_frequency(volt, wt)
    normal, _ = synth.synthesize_clip(domain, "normal", 8, volt=volt, wt=wt)
    tooth, _ = synth.synthesize_clip(domain, "anomaly", 8, fault="tooth", severity=0.8, volt=volt, wt=wt)
    assert _envelope_peak_ratio(normal, f_r) < 6
    assert _envelope_peak_ratio(tooth, f_r) > 8


@pytest.mark.parametrize("domain", ["source", "target"])
@pytest.mark.parametrize("kind", sorted(synth.FAULTS))
def test_every_fault_changes_the_log_mel_spectrum(domain, kind):
    volt, wt = synth.DOMAINS[domain].volts[1], synth.DOMAINS[domain].weights[1]
    normal = _normal_band_means_db(domain, 31, volt, wt)
    other = _normal_band_means_db(domain, 32, volt, wt)
    faulty = _band_means_db(
        synth.synthesize_clip(domain, "anomaly", 31, fault=kind, severity=0.6, volt=volt, wt=wt)[0]
    )
    natural = np.abs(other - normal).max()
    change = np.abs(faulty - normal).max()
    assert change > 1.0
    assert change > 1.5 * natural, (change, natural)


def test_fault_and_normal_share_the_machine_with_the_same_seed():
    normal, a = synth.synthesize_clip("source", "normal", 4, volt=1.2, wt=50, duration_s=2.0)
    faulty, b = synth.synthesize_clip(
        "source", "anomaly", 4, fault="bearing", severity=0.5, volt=1.2, wt=50, duration_s=2.0
    )
    assert a == {"volt": 1.2, "wt": 50} and b == {"volt": 1.2, "wt": 50, "fault": "bearing"}
    # Bearing impacts ring above 2 kHz: below 1 kHz the two clips are the same machine.
    sos = signal.butter(6, 1000.0, fs=SR, output="sos")
    low_n, low_f = signal.sosfilt(sos, normal), signal.sosfilt(sos, faulty)
    assert np.sqrt(np.mean((low_f - low_n) ** 2)) < 0.1 * np.sqrt(np.mean(low_n**2))


# ---------------------------------------------------------------------------------------------- API


def test_a_registered_fault_kind_is_used(monkeypatch):
    def whistle(t, params, rng, severity):
        return severity * np.sin(2 * np.pi * 3000.0 * t)

    monkeypatch.setitem(synth.FAULTS, "whistle", whistle)
    normal, _ = synth.synthesize_clip("source", "normal", 1, duration_s=1.0)
    wave, attributes = synth.synthesize_clip(
        "source", "anomaly", 1, fault="whistle", severity=0.5, duration_s=1.0
    )
    assert attributes["fault"] == "whistle"
    assert not np.array_equal(wave, normal)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="domain"):
        synth.synthesize_clip("elsewhere", "normal", 0)
    with pytest.raises(ValueError, match="fault"):
        synth.synthesize_clip("source", "anomaly", 0, fault="rust")
    with pytest.raises(ValueError, match="label"):
        synth.synthesize_clip("source", "broken", 0)
