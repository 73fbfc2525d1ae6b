"""Every accepted format decodes to the same recording: a synthetic clip encoded by PyAV's own encoders.

The clip is made at 48 kHz by ``anomaly.synth``; each case encodes it at the case's sample rate and bit
rate, ``load_audio`` decodes it to 16 kHz, and the result is compared with the same clip read from a float
WAV: same duration (within the encoder's padding) and the same per-band log-mel level in the band the codec
keeps. Labels are not asserted here: scoring band-limited recordings is another piece of work.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from anomaly.decoding import load_audio
from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams, log_mel

av = pytest.importorskip("av")

P = FeatureParams()
CLIP_SR = 48000
CLIP_SECONDS = 4.0
# AAC adds up to one 1024-sample frame at the end; the others are exact within a few samples.
PADDING_S = 0.05
FULL_BAND_HZ = P.sr / 2


def encode(
    y: np.ndarray,
    sr: int,
    container: str,
    codec: str,
    rate: int,
    *,
    bit_rate: int | None = None,
    channels: int = 1,
    options: dict[str, str] | None = None,
) -> bytes:
    """``y`` (mono float at ``sr``) encoded by PyAV/FFmpeg as ``codec`` at ``rate`` in ``container``."""
    layout = {1: "mono", 2: "stereo"}[channels]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        resampler = av.AudioResampler(
            format=stream.codec_context.codec.audio_formats[0].name, layout=layout, rate=rate
        )
        # Every channel carries the clip at its own level (an up-mix would lower it by 3 dB).
        source = av.AudioFrame.from_ndarray(
            np.repeat(y[None].astype(np.float32), channels, axis=0), format="fltp", layout=layout
        )
        source.sample_rate, source.pts = sr, 0
        for frame in [*resampler.resample(source), *resampler.resample(None)]:
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


# name: (container, codec, sample rate, band the codec keeps in Hz, tolerance in dB, encoder settings)
CASES = {
    "mp3-128k-16khz": ("mp3", "libmp3lame", 16000, 7000, 1.0, {"bit_rate": 128_000}),
    "mp3-320k-16khz": ("mp3", "libmp3lame", 16000, 7000, 1.0, {"bit_rate": 320_000}),
    "mp3-128k-44khz": ("mp3", "libmp3lame", 44100, FULL_BAND_HZ, 1.0, {"bit_rate": 128_000}),
    "mp3-320k-44khz": ("mp3", "libmp3lame", 44100, FULL_BAND_HZ, 1.0, {"bit_rate": 320_000}),
    "mp3-128k-48khz": ("mp3", "libmp3lame", 48000, FULL_BAND_HZ, 1.0, {"bit_rate": 128_000}),
    "mp3-320k-48khz": ("mp3", "libmp3lame", 48000, FULL_BAND_HZ, 1.0, {"bit_rate": 320_000}),
    # FFmpeg's own Vorbis encoder is experimental and stereo only.
    "ogg-vorbis": (
        "ogg",
        "vorbis",
        44100,
        FULL_BAND_HZ,
        1.0,
        {"channels": 2, "options": {"strict": "experimental"}},
    ),
    "ogg-opus": ("ogg", "libopus", 48000, FULL_BAND_HZ, 1.0, {"bit_rate": 64_000}),
    "m4a-aac-128k": ("ipod", "aac", 44100, FULL_BAND_HZ, 1.0, {"bit_rate": 128_000}),
    "webm-opus-64k": ("webm", "libopus", 48000, FULL_BAND_HZ, 1.0, {"bit_rate": 64_000}),
    "flac": ("flac", "flac", 44100, FULL_BAND_HZ, 0.05, {}),
    # 8 bits: quantisation noise (-48 dBFS) lifts the quiet top bands of this clip.
    "wav-8bit": ("wav", "pcm_u8", 16000, 5000, 1.0, {}),
    "wav-16bit": ("wav", "pcm_s16le", 44100, FULL_BAND_HZ, 0.05, {}),
    "wav-24bit": ("wav", "pcm_s24le", 48000, FULL_BAND_HZ, 0.05, {}),
    "wav-32bit": ("wav", "pcm_s32le", 48000, FULL_BAND_HZ, 0.05, {}),
    "wav-float": ("wav", "pcm_f32le", 22050, FULL_BAND_HZ, 0.05, {}),
}


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    from anomaly.synth import synthesize_clip

    y, _ = synthesize_clip("source", "normal", 3, sr=CLIP_SR, duration_s=CLIP_SECONDS)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def reference(clip) -> np.ndarray:
    buffer = io.BytesIO()
    sf.write(buffer, clip, CLIP_SR, format="WAV", subtype="FLOAT")
    return load_audio(buffer.getvalue(), P.sr, name="reference.wav")


def band_levels(y: np.ndarray) -> np.ndarray:
    """Mean log-mel level of each band in dB."""
    return log_mel(y, P).mean(axis=1)


def mel_centres_hz() -> np.ndarray:
    import librosa

    return librosa.mel_frequencies(P.n_mels + 2, fmin=P.fmin, fmax=P.fmax or P.sr / 2)[1:-1]


@pytest.mark.parametrize("case", list(CASES))
def test_every_format_decodes_to_the_same_recording(case, clip, reference):
    container, codec, rate, keeps_hz, tolerance_db, settings = CASES[case]
    data = encode(clip, CLIP_SR, container, codec, rate, **settings)
    y = load_audio(data, P.sr, name=f"{case}.bin")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(reference)) <= PADDING_S * P.sr, (len(y), len(reference))
    n = min(len(y), len(reference))
    kept = mel_centres_hz() < keeps_hz
    difference = band_levels(y[:n])[kept] - band_levels(reference[:n])[kept]
    assert np.abs(difference).max() <= tolerance_db, np.round(difference, 2)


def test_the_same_bytes_decode_from_a_file(clip, reference, tmp_path):
    path = tmp_path / "phone recording.m4a"
    path.write_bytes(encode(clip, CLIP_SR, "ipod", "aac", 44100, bit_rate=128_000))
    assert abs(len(load_audio(path, P.sr)) - len(reference)) <= PADDING_S * P.sr


def test_a_limit_is_kept_while_decoding_when_the_header_cannot_tell(clip):
    # 4 s of WebM: the header check allows a second of slack for estimated durations, so a limit of
    # 3.5 s is kept by counting decoded samples.
    data = encode(clip, CLIP_SR, "webm", "libopus", 48000, bit_rate=64_000)
    with pytest.raises(AudioInputError, match="longer than 3.5 s; at most 3.5 s can be scored"):
        load_audio(data, P.sr, name="long.webm", max_seconds=3.5)
    with pytest.raises(AudioInputError, match=r"4\.0 s long; at most 2 s can be scored"):
        load_audio(data, P.sr, name="long.webm", max_seconds=2.0)


@pytest.mark.parametrize(
    ("case", "cut"),
    [("m4a-aac-128k", 0.5), ("mp3-128k-48khz", 0.0001), ("ogg-opus", 0.02)],
)
def test_damaged_compressed_files_are_our_error_naming_the_file(case, cut, clip, tmp_path):
    container, codec, rate, _, _, settings = CASES[case]
    data = encode(clip, CLIP_SR, container, codec, rate, **settings)
    path = tmp_path / f"damaged {case}"
    path.write_bytes(data[: max(1, int(len(data) * cut))])
    with pytest.raises(AudioInputError) as info:
        load_audio(path, P.sr, min_seconds=2.0)
    assert str(info.value).startswith(path.name)
    assert str(tmp_path) not in str(info.value)


def test_a_file_with_no_audio_stream_is_refused(tmp_path):
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioInputError, match="no audio stream"):
        load_audio(buffer.getvalue(), P.sr, name="video.webm")


# --- same recording, same verdict ---------------------------------------------------------------------

# What a user may upload of one recording: each is scored against the WAV by the bundled model.
VERDICT_CASES = {
    "flac": ("flac", "flac", 16000, {}),
    "mp3-128k-16khz": ("mp3", "libmp3lame", 16000, {"bit_rate": 128_000}),
    "mp3-320k-16khz": ("mp3", "libmp3lame", 16000, {"bit_rate": 320_000}),
    "mp3-128k-44khz": ("mp3", "libmp3lame", 44100, {"bit_rate": 128_000}),
    "mp3-320k-48khz": ("mp3", "libmp3lame", 48000, {"bit_rate": 320_000}),
    "ogg-vorbis": ("ogg", "vorbis", 44100, {"channels": 2, "options": {"strict": "experimental"}}),
    # At 16 kHz, as a phone app or ``ffmpeg -ar 16000`` writes them (encoders' default quality).
    "ogg-vorbis-16khz": ("ogg", "vorbis", 16000, {"channels": 2, "options": {"strict": "experimental"}}),
    "ogg-opus-16khz": ("ogg", "libopus", 16000, {}),
    "m4a-aac-128k": ("mp4", "aac", 44100, {"bit_rate": 128_000}),
    "webm-opus-64k": ("webm", "libopus", 48000, {"bit_rate": 64_000}),
}
UPSAMPLED = (22050, 44100, 96000, 192000)


@pytest.fixture(scope="module")
def bundled_detector():
    from anomaly.bundle import DEFAULT_BUNDLE
    from anomaly.detector import Detector

    return Detector.load(DEFAULT_BUNDLE)


EXAMPLES = [
    "normal_source",
    "normal_target",
    "fault_tooth",
    "fault_bearing",
    "fault_tooth_mild",
    "fault_wear",
    "fault_imbalance",
    "fault_lubrication",
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_format_and_rate_gets_the_verdict_of_the_wav(example, bundled_detector, example_clips):
    """The label never changes and the score stays within 15 % of the WAV's (issue 10's goal)."""
    import librosa

    wav = example_clips / f"{example}.wav"
    y, sr = sf.read(wav, dtype="float32")
    base = bundled_detector.analyze(wav)
    uploads = {
        case: encode(y, sr, container, codec, rate, **settings)
        for case, (container, codec, rate, settings) in VERDICT_CASES.items()
    }
    for rate in UPSAMPLED:
        buffer = io.BytesIO()
        sf.write(buffer, librosa.resample(y, orig_sr=sr, target_sr=rate, res_type="soxr_hq"), rate, format="WAV")
        uploads[f"wav-{rate}hz"] = buffer.getvalue()
    for case, data in uploads.items():
        result = bundled_detector.analyze(data, name=f"{example}.{case}")
        # libvorbis at 16 kHz (not in PyAV's wheels) does change labels; the answer warns of any Vorbis below 32 kHz
        assert any("Ogg Vorbis at 16 kHz" in n for n in result.notes) == (case == "ogg-vorbis-16khz"), case
        assert result.label == base.label, (case, result.score, base.score)
        assert result.score == pytest.approx(base.score, rel=0.15), (case, result.score, base.score)


def test_a_narrow_band_recording_is_refused_saying_what_was_heard(bundled_detector, example_clips):
    import librosa

    y, sr = sf.read(example_clips / "normal_source.wav", dtype="float32")
    for rate, heard in ((8000, r"3\.[6-9]"), (11025, r"5\.[0-4]")):
        buffer = io.BytesIO()
        sf.write(buffer, librosa.resample(y, orig_sr=sr, target_sr=rate, res_type="soxr_hq"), rate, format="WAV")
        with pytest.raises(AudioInputError, match=rf"only up to about {heard} kHz.*at least 6\.0 kHz"):
            bundled_detector.analyze(buffer.getvalue(), name=f"phone_{rate}.wav")


def test_a_codec_low_pass_is_named_in_the_answer(bundled_detector, example_clips):
    y, sr = sf.read(example_clips / "normal_source.wav", dtype="float32")
    mp3 = encode(y, sr, "mp3", "libmp3lame", 16000, bit_rate=128_000)
    result = bundled_detector.analyze(mp3, name="normal.mp3")
    assert any("carries sound up to about 7." in note for note in result.notes), result.notes
    assert bundled_detector.analyze(example_clips / "normal_source.wav").notes == []
