"""Preprocessing: decoding, downmix, resampling, windows, images and bad input."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anomaly.decoding import load_audio
from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams, log_mel, log_mel_file, window_starts, windows
from anomaly.images import image_to_log_mel, log_mel_to_image

P = FeatureParams()


def tone(freq: float, sr: int, seconds: float, amp: float = 0.1, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    y = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def write(path, data, sr, subtype="PCM_16"):
    sf.write(path, data, sr, subtype=subtype)
    return path


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("file_sr", [8000, 22050, 44100, 48000])
def test_resampling_keeps_pitch_and_duration(tmp_path, file_sr):
    path = write(tmp_path / f"tone_{file_sr}.wav", tone(1000.0, file_sr, 3.0), file_sr)
    y = load_audio(path, sr=16000)
    assert abs(len(y) - 48000) <= 2
    assert abs(peak_hz(y, 16000) - 1000.0) < 2.0


def test_downmix_averages_channels(tmp_path):
    left = tone(500.0, 16000, 3.0, amp=0.2)
    data = np.stack([left, 0.5 * left], axis=1)
    y = load_audio(write(tmp_path / "stereo.wav", data, 16000, "FLOAT"), sr=16000)
    np.testing.assert_allclose(y, 0.75 * left, atol=1e-6)


def test_eight_channels_load_as_mono(tmp_path):
    data = tone(700.0, 16000, 3.0, channels=8)
    y = load_audio(write(tmp_path / "array.wav", data, 16000), sr=16000)
    assert y.ndim == 1 and len(y) == 48000


def test_other_formats_read_through_soundfile(tmp_path):
    path = tmp_path / "tone.flac"
    sf.write(path, tone(440.0, 16000, 3.0), 16000, format="FLAC")
    assert len(load_audio(path, sr=16000)) == 48000


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(2.02, 1), (2.1, 2), (3.0, 2), (10.0, 9), (30.0, 29)],
)
def test_window_count(seconds, expected):
    spec = log_mel(tone(300.0, P.sr, seconds).astype(np.float32), P)
    n_frames = spec.shape[1]
    starts = window_starts(n_frames, P)
    assert len(starts) == expected
    assert starts[0] == 0 and starts[-1] + P.window_frames == n_frames
    assert np.all(np.diff(starts) <= P.window_hop_frames)
    assert windows(spec, P).shape == (expected, P.n_mels, P.window_frames)


def test_log_mel_shape_and_orientation():
    spec = log_mel(tone(6000.0, P.sr, 3.0).astype(np.float32), P)
    assert spec.shape == (128, 1 + 3 * P.sr // P.hop_length)
    # A high tone lights up a high band: row 0 is the lowest frequency.
    assert spec.mean(axis=1).argmax() > 100


def test_image_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    spec = log_mel(rng.normal(0, 0.02, P.sr * 3).astype(np.float32), P)
    image = log_mel_to_image(spec, P)
    assert image.dtype == np.uint8 and image.shape == spec.shape
    path = tmp_path / "spec.png"
    Image.fromarray(image, mode="L").save(path)
    back = image_to_log_mel(path, P)
    step = (P.db_max - P.db_min) / 255
    inside = (spec > P.db_min) & (spec < P.db_max)
    assert np.abs(back - spec)[inside].max() <= step / 2 + 1e-4
    # Low frequencies at the bottom: the first image row is the highest band.
    assert np.array_equal(image[0], log_mel_to_image(spec[-1:], P)[0])


def test_gray_rgb_image_is_accepted():
    image = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (128, 1))
    rgb = Image.fromarray(np.stack([image] * 3, axis=2), mode="RGB")
    assert image_to_log_mel(rgb, P).shape == (128, 80)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 80, 3), dtype=np.uint8)),
            "colour",
        ),
        (
            lambda: Image.fromarray(np.random.default_rng(1).integers(0, 255, (224, 224), dtype=np.uint8)),
            "128 pixels",
        ),
        (
            lambda: Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 20), dtype=np.uint8)),
            "wide",
        ),
        (lambda: Image.fromarray(np.zeros((128, 80), np.uint8)), "blank"),
        (lambda: Image.fromarray(np.zeros((128, 80), np.int32), mode="I"), "8-bit"),
    ],
)
def test_wrong_images_are_refused(make, message):
    with pytest.raises(AudioInputError, match=message) as info:
        image_to_log_mel(make(), P, name="picture.png")
    assert "picture.png" in str(info.value)


def test_non_image_bytes_are_refused():
    with pytest.raises(AudioInputError, match="not a readable image"):
        image_to_log_mel(b"hello, not a png", P, name="x.png")


def _wav_bytes(data: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("empty.wav", lambda p: p.write_bytes(b""), "empty"),
        (
            "notes.wav",
            lambda p: p.write_text("this is a text file renamed to .wav\n" * 20),
            "not a readable audio",
        ),
        (
            "cut.wav",
            lambda p: p.write_bytes(_wav_bytes(tone(200, 16000, 3.0), 16000)[:30]),
            "not a readable audio",
        ),
        ("silence.wav", lambda p: write(p, np.zeros(16000 * 3), 16000), "silent"),
        ("nan.wav", lambda p: write(p, np.full(16000 * 3, np.nan, np.float32), 16000, "FLOAT"), "NaN"),
        ("short.wav", lambda p: write(p, tone(200, 16000, 0.2), 16000), "0.20 s long"),
        ("random.wav", lambda p: p.write_bytes(np.random.default_rng(5).bytes(5000)), "not a readable audio"),
    ],
)
def test_bad_audio_raises_our_error_naming_the_file(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioInputError, match=message) as info:
        log_mel_file(path, P)
    assert str(info.value).startswith(name)


def test_too_long_is_refused_before_decoding(tmp_path):
    path = write(tmp_path / "long.wav", np.zeros(16000 * 130, np.int16), 16000)
    with pytest.raises(AudioInputError, match="130.0 s long; at most 120 s"):
        load_audio(path, sr=16000, max_seconds=120)


def test_ten_minutes_are_scored_window_by_window(tmp_path):
    rng = np.random.default_rng(2)
    path = write(tmp_path / "ten_minutes.wav", rng.normal(0, 0.02, 16000 * 600).astype(np.float32), 16000)
    spec = log_mel_file(path, P)
    assert windows(spec, P).shape[0] == len(window_starts(spec.shape[1], P)) > 500


def test_clipped_audio_is_accepted(tmp_path):
    y = np.clip(tone(300, 16000, 3.0, amp=3.0), -1, 1)
    assert np.isfinite(log_mel_file(write(tmp_path / "clipped.wav", y, 16000), P)).all()


def test_truncated_data_chunk_reads_what_is_there(tmp_path):
    # A header that promises more samples than the file holds: libsndfile reads what is present.
    data = _wav_bytes(tone(200, 16000, 4.0), 16000)
    path = tmp_path / "truncated.wav"
    path.write_bytes(data[: len(data) // 2])
    y = load_audio(path, sr=16000, min_seconds=1.0)
    assert 1.5 * 16000 < len(y) < 2.5 * 16000


def test_a_file_cut_short_says_how_much_was_read(tmp_path):
    """A WAV whose header promises 10 s and holds 3.3 s: scored, with a note; a whole one gets none."""
    data = _wav_bytes(tone(200, 16000, 10.0), 16000)
    wav = tmp_path / "cut.wav"
    wav.write_bytes(data[: 44 + int(3.3 * 16000) * 2])
    notes: list[str] = []
    assert abs(len(load_audio(wav, sr=16000, notes=notes)) - 3.3 * 16000) < 16
    assert notes == ["The file is cut short: its header promises 10.0 s, only 3.3 s were there to read and score."]
    notes = []
    load_audio(write(tmp_path / "whole.wav", tone(200, 16000, 10.0), 16000), sr=16000, notes=notes)
    assert notes == []


@pytest.mark.parametrize("file_sr", [48000, 44100])
def test_a_long_recording_read_piece_by_piece_equals_reading_it_whole(file_sr):
    """Without a duration limit, long files are downmixed and resampled in pieces (bounded memory):
    the joins must not show."""
    from anomaly.waveform import STREAM_PIECE_S, MonoStream, resample

    rng = np.random.default_rng(5)
    stereo = rng.normal(0, 0.1, (file_sr * (2 * STREAM_PIECE_S + 7), 2)).astype(np.float32)
    whole = resample(stereo.mean(axis=1), file_sr, 16000)
    stream = MonoStream(file_sr, 16000, expected_frames=len(stereo) // 3)  # an underestimate: it grows
    for at in range(0, len(stereo), 40_000):
        stream.feed(stereo[at : at + 40_000])
    pieces = stream.finish()
    assert len(pieces) == len(whole) and np.abs(pieces - whole).max() < 1e-6


def test_log_mel_in_chunks_equals_log_mel_at_once(monkeypatch):
    import anomaly.features as features

    y = np.random.default_rng(6).normal(0, 0.1, 16000 * 7 + 123).astype(np.float32)
    at_once = log_mel(y, P)
    monkeypatch.setattr(features, "LOG_MEL_CHUNK_FRAMES", 5)
    assert np.array_equal(log_mel(y, P), at_once)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=4096), riff=st.booleans())
def test_random_bytes_never_crash_the_decoder(payload, riff):
    if riff:
        # Give libsndfile a plausible header so the fuzzing reaches the chunk parser.
        payload = b"RIFF" + struct.pack("<I", len(payload) + 36) + b"WAVEfmt " + payload
    try:
        spec = log_mel_file(payload, P, name="fuzz.wav")
    except AudioInputError as exc:
        assert str(exc).startswith("fuzz.wav")
    else:
        assert np.isfinite(spec).all()


def test_log_mel_matches_librosa_melspectrogram():
    # The DCASE convention through librosa's own STFT (what the fast path in log_mel must reproduce).
    import librosa

    y = np.random.default_rng(3).normal(0, 0.05, 16000 * 3).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=y, sr=P.sr, n_fft=P.n_fft, hop_length=P.hop_length, n_mels=P.n_mels, power=2.0, center=True
    )
    np.testing.assert_allclose(log_mel(y, P), 10 * np.log10(mel + 1e-10), atol=1e-3)


@pytest.mark.parametrize("file_sr", [22050, 44100, 48000])
def test_resampling_down_keeps_the_top_of_the_band(tmp_path, file_sr):
    import librosa

    # White noise at 16 kHz, then the same sound at file_sr (FFT resampling is exact for it).
    y = np.random.default_rng(4).normal(0, 0.05, 16000 * 3).astype(np.float32)
    up = librosa.resample(y, orig_sr=16000, target_sr=file_sr, res_type="fft")
    back = load_audio(write(tmp_path / "up.wav", up, file_sr, "FLOAT"), sr=16000)
    bands = log_mel(back[: len(y)], P).mean(axis=1) - log_mel(y, P).mean(axis=1)
    assert np.abs(bands[:-1]).max() < 0.1  # every mel band but the top one (7.6 to 8 kHz) within 0.1 dB
    assert abs(bands[-1]) < 1.0  # its last 160 Hz lie in the low-pass transition (soxr alone: -15 dB)


def test_samples_far_beyond_full_scale_are_refused(tmp_path):
    # Float files can hold any value; 1e18 would overflow the power spectrum into a NaN score.
    path = write(tmp_path / "huge.wav", tone(300, 16000, 3.0, amp=1e18), 16000, "FLOAT")
    with pytest.raises(AudioInputError, match="far beyond full scale") as info:
        log_mel_file(path, P)
    assert str(info.value).startswith("huge.wav: ")
    assert np.isfinite(
        log_mel_file(write(tmp_path / "hot.wav", tone(300, 16000, 3.0, amp=4.0), 16000, "FLOAT"), P)
    ).all()


def _wav_header(sr: int, channels: int, data_bytes: int, bits: int = 16) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def test_a_header_claiming_24_mhz_is_refused_before_decoding(tmp_path):
    path = tmp_path / "fast.wav"
    path.write_bytes(_wav_header(24_000_000, 1, 48_000_000) + b"\0" * 4096)
    with pytest.raises(AudioInputError, match="24000000 Hz; at most 384000 Hz is accepted") as info:
        load_audio(path, sr=16000, max_seconds=120)
    assert str(info.value).startswith("fast.wav:")


def test_rate_times_duration_times_channels_has_a_ceiling(tmp_path):
    # 100 s of 192 kHz stereo is within the duration limit but twice the samples of 96 kHz stereo.
    path = tmp_path / "hires.wav"
    header = _wav_header(192_000, 2, 100 * 192_000 * 4)
    path.write_bytes(header)
    os.truncate(path, len(header) + 100 * 192_000 * 4)  # sparse: libsndfile counts the bytes present
    with pytest.raises(
        AudioInputError,
        match=r"38\.4 million samples \(192000 Hz x 100\.0 s x 2 channels\); at most 23\.0 million",
    ):
        load_audio(path, sr=16000, max_seconds=120)


def _png(width: int, height: int) -> bytes:
    """A large, highly compressible grayscale PNG (a few hundred KB) written row by row by PIL."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 0).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def test_an_image_wider_than_the_longest_recording_is_refused_before_decoding(monkeypatch):
    from PIL import ImageFile

    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(
        AudioInputError, match=r"400000 pixels wide, a recording of 12800 s; at most 3751 frames \(120 s\)"
    ):
        image_to_log_mel(_png(400_000, 128), P, name="wide.png", max_seconds=120)
    assert not decoded


def test_wide_images_are_read_without_a_limit():
    pixels = np.random.default_rng(0).integers(0, 255, (128, 4000), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    assert image_to_log_mel(buffer.getvalue(), P).shape == (128, 4000)
    with pytest.raises(AudioInputError, match="at most 3751 frames"):
        image_to_log_mel(buffer.getvalue(), P, max_seconds=120)


def test_a_decompression_bomb_is_refused_with_its_size():
    with pytest.raises(AudioInputError, match=r"holds 400 million pixels, more than 179 million") as info:
        image_to_log_mel(_png(20_000, 20_000), P, name="bomb.png", max_seconds=120)
    assert str(info.value).startswith("bomb.png:")


def test_missing_top_bands_matches_its_definition_band_by_band():
    """The vectorised search gives what the definition says, candidate band by candidate band."""
    from anomaly.bands import missing_top_bands

    def by_definition(level, profile, drop_db, context=8):
        deviation = level - profile
        n = len(deviation)
        overall = float(np.median(deviation[n // 4 :]))
        for first in range(n // 2, n):
            typical = min(float(np.median(deviation[max(0, first - context) : first])), overall)
            if deviation[first:].max() < typical - drop_db:
                return n - first
        return 0

    rng = np.random.default_rng(0)
    found = 0
    for i in range(600):
        n = (128, 64, 12)[i % 3]
        level = rng.normal(0, 4, n).cumsum() * rng.uniform(0, 1)
        if i % 2:
            level[-int(rng.integers(1, n // 2 + 1)) :] -= rng.uniform(0, 60)
        profile = rng.normal(0, 1, n)
        drop = float(rng.choice([3.0, 10.0]))
        expected = by_definition(level, profile, drop)
        assert missing_top_bands(level, profile, drop_db=drop) == expected
        found += expected > 0
    assert found > 100  # the cases cover cliffs, not only full-band recordings
