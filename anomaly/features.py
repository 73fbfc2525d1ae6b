"""The one preprocessing path: file -> waveform -> log-mel -> model windows (and spectrogram images).

Training, calibration, prediction and the app all call these functions, with parameters read from the
model bundle (``FeatureParams``), so preprocessing cannot drift between them.

Spectrogram image convention (the old system's second input, and what the app draws):
8-bit grayscale PNG, one row per mel band with the LOWEST frequency in the BOTTOM row, one column per
frame with time running to the right. A pixel value ``p`` stands for ``db_min + p / 255 * (db_max - db_min)``
decibels, where ``db_min`` and ``db_max`` are stored in the bundle (defaults -100 and 20 dB). The image
must have exactly ``n_mels`` rows and at least one window of columns. Min-max normalised images from other
tools lose the absolute level and cannot be scored faithfully.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from anomaly.errors import AudioInputError

# Below this RMS (about -100 dBFS) a recording carries no usable sound: dead microphone or digital silence.
SILENCE_RMS = 1e-5
# Full scale is 1. Float files may go a little over, but samples 60 dB above it are not a recording (often
# integer sample values stored as float); far enough above, the power spectrum overflows float32.
MAX_PEAK = 1000.0
# Samples below this (-120 dBFS, under 16-bit resolution) at the very start or end are an encoder's padding
# (digital zero), not the recording; quiet sound (a dropout in a real recording) is kept.
EDGE_SILENCE = 1e-6
EDGE_SILENCE_SECONDS = 0.005
# Shortest recording accepted; shorter than one model window, it is scored as one repeated window.
MIN_SECONDS = 0.5

# What the app and the CLI read. libsndfile reads WAV, FLAC and AIFF; FFmpeg (PyAV, which ships its own
# build) reads the compressed formats, Ogg and MP3 included, so that every lossy format has one decoder.
AUDIO_FORMATS = "WAV (8/16/24/32-bit integer or float), FLAC, OGG (Vorbis or Opus), MP3, M4A/AAC, WebM/Opus"
AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".aif",
    ".aiff",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".mp4",
    ".webm",
)
_FFMPEG_FORMATS = {"OGG", "MPEG"}  # libsndfile's names of formats it reads that FFmpeg reads instead
# FFmpeg may open these containers and no others (it can probe hundreds, each a parser exposed to uploads).
_FFMPEG_DEMUXERS = "ogg,mp3,mov,mp4,m4a,matroska,webm,aac"
# Ceilings checked from the header before decoding. 384 kHz covers every audio interface and ultrasonic
# recorder; a higher rate is damage or an attack (a 49 MB WAV whose header says 24 MHz).
MAX_SAMPLE_RATE = 384_000
# With a duration limit, at most this many sample values per second of it are decoded: 96 kHz stereo
# (120 s -> 23 million samples, 92 MB as float32).
MAX_SAMPLES_PER_SECOND = 96_000 * 2
# Lossy encoders pad the end (AAC by up to one 1024-sample frame): a limit is not missed by that.
CODEC_PADDING_S = 0.1
# The longest recording the app scores, and the CLI unless told ``--no-limits`` (the model was trained on
# 10 s clips; two minutes cover any sensible recording of a steady machine).
MAX_SECONDS = 120.0
# Recordings longer than this (only without a duration limit) are decoded in pieces of STREAM_PIECE_S, each
# downmixed and resampled with STREAM_CONTEXT_S of context on either side and cut back to its own span, so
# that memory stays bounded however long, fast or wide the file is (the result equals resampling it whole,
# up to float rounding).
STREAM_ABOVE_S = MAX_SECONDS
STREAM_PIECE_S = 30
STREAM_CONTEXT_S = 1
# Frames transformed at once by ``log_mel``: 16 MB of spectrum whatever the recording's length.
LOG_MEL_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class FeatureParams:
    """How audio becomes the model's input. Stored in the bundle's ``config.json``.

    ``window_frames`` frames (about 2 s by default) make one model input; longer recordings are cut into
    windows every ``window_hop_frames`` frames (about 1 s), and a last window is aligned with the end so
    that no tail goes unscored.
    """

    sr: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    window_frames: int = 64
    window_hop_frames: int = 32
    db_min: float = -100.0
    db_max: float = 20.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these parameters, as a whole: types, ranges and relations (empty if nothing).

        Checked before anything is built from them, so that a damaged ``config.json`` is refused in one line
        instead of dividing by zero or allocating gigabytes (``n_fft`` 2**30) later.
        """
        out: list[str] = []

        def whole(field: str, low: int, high: int, unit: str = "") -> bool:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                out.append(f"{field} must be a whole number from {low} to {high}{unit}, not {value!r}")
                return False
            return True

        def number(field: str, optional: bool = False) -> bool:
            value = getattr(self, field)
            if optional and value is None:
                return True
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                out.append(f"{field} must be a finite number, not {value!r}")
                return False
            return True

        sr_ok = whole("sr", 4000, 192_000, " Hz")
        n_fft_ok = whole("n_fft", 16, 16384)
        if n_fft_ok:
            whole("hop_length", 1, self.n_fft, " (n_fft)")
            whole("n_mels", 1, min(512, self.n_fft // 2 + 1), " (n_fft / 2 + 1, at most 512)")
        if number("fmin") and number("fmax", optional=True) and sr_ok:
            top = self.sr / 2 if self.fmax is None else self.fmax
            if not 0 <= self.fmin < top <= self.sr / 2:
                out.append(
                    f"need 0 <= fmin < fmax <= sr / 2 = {self.sr / 2:g} Hz, not fmin {self.fmin!r}, fmax {self.fmax!r}"
                )
        if number("power") and not 0 < self.power <= 4:
            out.append(f"power must be above 0 and at most 4, not {self.power!r}")
        if whole("window_frames", 1, 100_000):
            whole("window_hop_frames", 1, self.window_frames, " (window_frames)")
        if number("db_min") and number("db_max") and not self.db_min < self.db_max:
            out.append(f"db_min ({self.db_min!r}) must be below db_max ({self.db_max!r})")
        return out

    @property
    def window_seconds(self) -> float:
        return (self.window_frames - 1) * self.hop_length / self.sr

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sr

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureParams:
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing must be a JSON object, not {type(data).__name__}")
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {sorted(unknown)}")
        return cls(**data)


def load_audio(
    source: str | Path | bytes,
    sr: int,
    *,
    name: str | None = None,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Read a recording in any accepted format (``AUDIO_FORMATS``), downmix to mono and resample to ``sr``.

    WAV, FLAC and AIFF are read by libsndfile (soundfile); Ogg, MP3, M4A/AAC and WebM by FFmpeg through
    PyAV, whose wheels bring their own FFmpeg. Sample rate, duration and the number of samples are checked
    from the file's header before any sample is decoded (``MAX_SAMPLE_RATE``, ``max_seconds`` and
    ``MAX_SAMPLES_PER_SECOND``), and again while decoding when the header cannot say.

    Parameters
    ----------
    source : path or bytes of an audio file.
    sr : the sample rate the model expects.
    name : what to call the file in error messages (defaults to the file's name).
    min_seconds, max_seconds : accepted duration range (``max_seconds=None``: any length, decoded piece by
        piece beyond ``STREAM_ABOVE_S`` in bounded memory).
    notes : if given, what the answer should say about the reading is appended (a file cut short).

    Returns
    -------
    float32 waveform in [-1, 1].

    Raises
    ------
    AudioInputError
        empty, undecodable, truncated, too short or too long, silent or non-finite input, or a header
        beyond the ceilings.

    Examples
    --------
    >>> y = load_audio("examples/normal_source.wav", sr=16000)  # doctest: +SKIP
    """
    label = name or (Path(source).name if not isinstance(source, bytes) else "upload")
    if isinstance(source, bytes):
        if not source:
            raise AudioInputError(label, "the file is empty")
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioInputError(label, "no such file")
        if path.stat().st_size == 0:
            raise AudioInputError(label, "the file is empty")
    info, sf_problem = None, None
    if not _is_compressed(_head(source)):
        try:
            info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OSError) as exc:
            sf_problem = _libsndfile_problem(exc, source, label)
    if info is not None and info.format not in _FFMPEG_FORMATS:
        data, file_sr = _read_soundfile(source, info, label, max_seconds, sr, notes)
    else:
        data, file_sr = _read_ffmpeg(source, label, max_seconds, sf_problem, sr)
    return prepare_waveform(data, file_sr, sr, name=label, min_seconds=min_seconds)


def _read_soundfile(
    source: str | Path | bytes,
    info,
    label: str,
    max_seconds: float | None,
    sr: int,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, int]:
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(label, "the file holds no audio samples")
    check_header(label, info.samplerate, info.frames / info.samplerate, info.channels, max_seconds)
    stream = max_seconds is None and info.frames / info.samplerate > STREAM_ABOVE_S
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        if stream:
            with sf.SoundFile(handle) as fh:
                mono = MonoStream(info.samplerate, sr, expected_frames=info.frames)
                for block in fh.blocks(blocksize=info.samplerate * 5, dtype="float32", always_2d=True):
                    mono.feed(block)
            data, file_sr, read = mono.finish(), sr, mono.frames_in
        else:
            data, file_sr = sf.read(handle, dtype="float32", always_2d=True)
            read = len(data)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OSError) as exc:
        raise AudioInputError(
            label, f"not a readable audio file ({_libsndfile_problem(exc, source, label)})"
        ) from None
    promised = _promised_frames(info)
    if read < promised and notes is not None:
        notes.append(
            f"The file is cut short: its header promises {promised / info.samplerate:.1f} s, only "
            f"{read / info.samplerate:.1f} s were there to read and score."
        )
    return data, file_sr


def _promised_frames(info) -> int:
    """How many frames the file's header promises. libsndfile sizes a WAV by the bytes that are there and
    says in its log what the header claimed ("data : 320000 (should be 105600)"); FLAC's header count is
    ``info.frames`` itself, and reading then stops short."""
    claimed = re.search(r"^data : (\d+) \(should be \d+\)", info.extra_info or "", re.M)
    align = re.search(r"Block Align\s*:\s*(\d+)", info.extra_info or "")
    if claimed and align and int(align.group(1)) > 0:
        return max(info.frames, int(claimed.group(1)) // int(align.group(1)))
    return info.frames


class MonoStream:
    """Blocks of a recording (samples x channels at ``file_sr``) in, the mono waveform at ``sr`` out, in
    bounded memory: pieces of ``STREAM_PIECE_S`` are resampled with ``STREAM_CONTEXT_S`` of context on
    either side (longer than any resampling filter) and cut back to their own span, so that the joins are
    seamless. Piece and context are whole seconds, so each maps to a whole number of output samples."""

    def __init__(self, file_sr: int, sr: int, *, expected_frames: int = 0):
        self.file_sr, self.sr = int(file_sr), int(sr)
        self.piece_in, self.context_in = STREAM_PIECE_S * self.file_sr, STREAM_CONTEXT_S * self.file_sr
        self.frames_in = 0
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # input index of self._buffer[0]
        # Written in place when the header says how long the file is, so that the waveform is never held
        # twice (as pieces and as their concatenation); grown like a list when it runs over.
        self._out = np.empty(expected_frames * self.sr // self.file_sr + 1, dtype=np.float32)
        self._written = 0
        self._done = 0  # pieces resampled

    def feed(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
        self._buffer = np.concatenate([self._buffer, mono])
        self.frames_in += len(mono)
        while self.frames_in >= (self._done + 1) * self.piece_in + self.context_in:
            self._resample_piece(last=False)

    def finish(self) -> np.ndarray:
        if self.frames_in > self._done * self.piece_in or not self._done:
            self._resample_piece(last=True)
        return self._out[: self._written]

    def _resample_piece(self, *, last: bool) -> None:
        start = self._done * self.piece_in
        low = max(0, start - self.context_in)
        high = self.frames_in if last else start + self.piece_in + self.context_in
        piece = self._buffer[low - self._buffer_start : high - self._buffer_start]
        out = piece if self.file_sr == self.sr else resample(piece, self.file_sr, self.sr)
        left = (start - low) * self.sr // self.file_sr
        keep = out[left:] if last else out[left : left + self.piece_in * self.sr // self.file_sr]
        if self._written + len(keep) > len(self._out):
            grown = np.empty(max(2 * len(self._out), self._written + len(keep)), dtype=np.float32)
            grown[: self._written] = self._out[: self._written]
            self._out = grown
        self._out[self._written : self._written + len(keep)] = keep
        self._written += len(keep)
        self._done += 1
        drop = self._done * self.piece_in - self.context_in - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:].copy()
            self._buffer_start += drop


def check_header(
    label: str,
    file_sr: float,
    seconds: float | None,
    channels: int,
    max_seconds: float | None,
    *,
    slack_s: float = 0.0,
) -> None:
    """Refuse, from what a header says, a file whose samples would cost more than one upload may.

    ``seconds`` is None when the container does not say (a WebM recorded by a browser); the decoder then
    stops at the same limits as it goes. ``slack_s`` allows for headers that count an encoder's padding or
    estimate the duration from the bit rate.
    """
    if file_sr > MAX_SAMPLE_RATE:
        raise AudioInputError(
            label,
            f"the header gives a sample rate of {file_sr:.0f} Hz; at most {MAX_SAMPLE_RATE} Hz is accepted",
        )
    if seconds is None or max_seconds is None:
        return
    if seconds > max_seconds + slack_s:
        raise AudioInputError(
            label, f"the recording is {seconds:.1f} s long; at most {max_seconds:g} s can be scored"
        )
    limit = max_samples(max_seconds)
    values = file_sr * max(seconds - slack_s, 0.0) * max(channels, 1)
    if values > limit:
        raise AudioInputError(
            label,
            f"the file holds {values / 1e6:.1f} million samples ({file_sr:.0f} Hz x {seconds:.1f} s x "
            f"{channels} channels); at most {limit / 1e6:.1f} million can be decoded",
        )


def max_samples(max_seconds: float) -> int:
    """Most sample values (rate x seconds x channels) decoded from one recording of at most ``max_seconds``."""
    return int(max_seconds * MAX_SAMPLES_PER_SECOND)


def _read_ffmpeg(
    source: str | Path | bytes, label: str, max_seconds: float | None, sf_problem: str | None, sr: int
) -> tuple[np.ndarray, int]:
    """Decode the first audio stream with FFmpeg (PyAV), within the header and running limits."""
    import av

    try:
        container = av.open(
            io.BytesIO(source) if isinstance(source, bytes) else str(source),
            container_options={"format_whitelist": _FFMPEG_DEMUXERS},
        )
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        # Neither library knows the file. libsndfile's reason is the useful one when it knew the format
        # (a WAV without its data chunk); otherwise say what is accepted.
        reason = sf_problem if sf_problem and "not recognised" not in sf_problem else None
        raise AudioInputError(
            label,
            f"not a readable audio file ({reason or 'the format is not recognised, or the file is damaged'}); "
            f"accepted formats: {AUDIO_FORMATS}",
        ) from None
    with container:
        if not container.streams.audio:
            raise AudioInputError(label, "the file holds no audio stream")
        stream = container.streams.audio[0]
        file_sr = int(stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        if file_sr <= 0 or channels <= 0:
            raise AudioInputError(label, "the file holds no audio samples")
        seconds = None
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            seconds = container.duration / av.time_base
        # The exact check is on the decoded samples, below.
        check_header(label, file_sr, seconds, channels, max_seconds, slack_s=1.0)
        limit_seconds = None if max_seconds is None else max_seconds + CODEC_PADDING_S
        limit_values = None if max_seconds is None else max_samples(max_seconds)
        chunks: list[np.ndarray] = []
        mono = None  # a MonoStream once an unlimited recording grows past STREAM_ABOVE_S
        resampler = None
        decoded = values = damaged = packets = 0
        try:
            for packet in container.demux(stream):
                packets += 1
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    damaged += 1  # a player skips a broken packet; too many and the file is refused
                    continue
                for frame in frames:
                    if frame.sample_rate != file_sr:
                        raise AudioInputError(label, "the sample rate changes within the file")
                    if resampler is None:  # to float, planar; same rate and layout (our resampler follows)
                        resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=file_sr)
                    for converted in resampler.resample(frame):
                        chunk = converted.to_ndarray()
                        decoded += chunk.shape[1]
                        values += chunk.size
                        if mono is not None:
                            mono.feed(chunk.T)
                            continue
                        chunks.append(chunk)
                        if max_seconds is None and decoded / file_sr > STREAM_ABOVE_S:
                            mono = MonoStream(file_sr, sr)
                            for kept in chunks:
                                mono.feed(kept.T)
                            chunks.clear()
                    if limit_seconds is not None and decoded / file_sr > limit_seconds:
                        raise AudioInputError(
                            label,
                            f"the recording is longer than {max_seconds:g} s; at most "
                            f"{max_seconds:g} s can be scored",
                        )
                    if limit_values is not None and values > limit_values:
                        raise AudioInputError(
                            label,
                            f"the file holds more than {limit_values / 1e6:.1f} million samples "
                            f"({file_sr} Hz x {channels} channels); at most {limit_values / 1e6:.1f} "
                            "million can be decoded",
                        )
        except av.error.FFmpegError as exc:
            raise AudioInputError(label, f"not a readable audio file ({_ffmpeg_problem(exc)})") from None
    if damaged > max(2, packets // 100):
        raise AudioInputError(
            label, f"not a readable audio file ({damaged} of {packets} audio packets are damaged)"
        )
    if mono is not None:
        return mono.finish()[:, None], sr
    if not chunks:
        raise AudioInputError(label, "the file holds no audio samples")
    data = np.concatenate(chunks, axis=1).T
    if max_seconds is not None and len(data) / file_sr > max_seconds + CODEC_PADDING_S:
        raise AudioInputError(
            label,
            f"the recording is {len(data) / file_sr:.1f} s long; at most {max_seconds:g} s can be scored",
        )
    return data, file_sr


def native_sample_rate(source: str | Path) -> int | None:
    """The sample rate a file was recorded at, read from its header as ``load_audio`` reads it (libsndfile,
    else FFmpeg); None when neither can say. For reports: ``load_audio`` has already checked the file."""
    try:
        if not _is_compressed(_head(source)):
            info = sf.info(str(source))
            if info.format not in _FFMPEG_FORMATS:
                return int(info.samplerate) or None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError, OSError):
        pass
    import av

    try:
        with av.open(str(source), container_options={"format_whitelist": _FFMPEG_DEMUXERS}) as container:
            return int(container.streams.audio[0].codec_context.sample_rate or 0) or None
    except (av.error.FFmpegError, OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _head(source: str | Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:16]
    with open(source, "rb") as fh:
        return fh.read(16)


def _is_compressed(head: bytes) -> bool:
    """Ogg, MP3 (ID3 tag or frame sync), AAC (ADTS), MP4/M4A or Matroska/WebM by their first bytes.

    These go straight to FFmpeg: libsndfile would read Ogg and MP3 too, and its MP3 decoder prints to
    the server's stderr on the way.
    """
    return (
        head.startswith((b"OggS", b"ID3", b"\x1a\x45\xdf\xa3"))
        or head[4:8] == b"ftyp"
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    )


def _libsndfile_problem(exc: BaseException, source: str | Path | bytes, label: str) -> str:
    # libsndfile quotes the full path (a server's temp folder, for uploads): say the file's name only.
    reason = getattr(exc, "error_string", None) or _short(exc)
    if not isinstance(source, bytes):
        reason = reason.replace(str(source), label)
    return reason.rstrip(".")


def _ffmpeg_problem(exc: BaseException) -> str:
    # strerror, not str(exc): the latter quotes the path of the file.
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def prepare_waveform(
    data: np.ndarray, file_sr: int, sr: int, *, name: str = "audio", min_seconds: float = 0.0
) -> np.ndarray:
    """Validate a decoded waveform (samples x channels, or 1-D), downmix it and resample it to ``sr``."""
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.size == 0:
        raise AudioInputError(name, "the file holds no audio samples")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise AudioInputError(name, "the audio contains NaN or infinite samples")
    peak = max(float(data.max()), -float(data.min()))
    if peak > MAX_PEAK:
        raise AudioInputError(
            name,
            f"the samples reach {peak:.3g}, far beyond full scale (1.0); expected samples between -1 and 1",
        )
    if not file_sr or file_sr < 1000:
        raise AudioInputError(name, f"implausible sample rate {file_sr} Hz")
    seconds = data.shape[0] / file_sr
    if seconds < min_seconds:
        raise AudioInputError(
            name, f"the recording is {_floor2(seconds)} s long; at least {min_seconds:g} s is needed"
        )
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if _rms(y) < SILENCE_RMS:
        raise AudioInputError(name, "the recording is silent (no signal above -100 dBFS)")
    y = trim_edge_silence(y, min_samples=int(EDGE_SILENCE_SECONDS * file_sr))
    if file_sr != sr:
        y = resample(y, file_sr, sr)
    return np.ascontiguousarray(y, dtype=np.float32)


def _first_loud(y: np.ndarray, threshold: float, chunk: int = 1 << 16) -> int | None:
    """Index of the first sample above ``threshold``, looking a chunk at a time (the edges are short)."""
    for at in range(0, len(y), chunk):
        loud = np.abs(y[at : at + chunk]) > threshold
        if loud.any():
            return at + int(loud.argmax())
    return None


def _rms(y: np.ndarray, chunk: int = 1 << 20) -> float:
    """Root mean square, summed in float64 a chunk at a time (a float64 copy of an hour would be 460 MB)."""
    total = sum(float(np.square(y[at : at + chunk], dtype=np.float64).sum()) for at in range(0, len(y), chunk))
    return math.sqrt(total / max(len(y), 1))


def trim_edge_silence(y: np.ndarray, min_samples: int = 1, threshold: float = EDGE_SILENCE) -> np.ndarray:
    """Drop the digital silence a lossy encoder puts before and after the sound (AAC's priming and
    padding, about 64 ms): scored as sound, it reads as a sudden drop in every band. Runs shorter than
    ``min_samples`` (a zero crossing) are kept."""
    first = _first_loud(y, threshold)
    if first is None:
        return y
    last = len(y) - 1 - _first_loud(y[::-1], threshold)
    start = first if first >= min_samples else 0
    stop = last + 1 if len(y) - 1 - last >= min_samples else len(y)
    return y[start:stop]


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample keeping the band up to 98 % of the new Nyquist frequency.

    soxr alone (librosa's default) rolls off from 91 % of the lower Nyquist frequency: going down to
    16 kHz it takes 5 and 15 dB off the two top mel bands (7.4 to 8 kHz), enough to move a normal
    recording made at 44.1 or 48 kHz past the thresholds. So going down, soxr only brings the rate to an
    integer multiple of ``target_sr`` (its roll-off then lies far above the band kept) and a steep
    linear-phase low-pass decimates by that integer. Going up, soxr is used as it is: the file has nothing
    above its own band to keep.
    """
    import librosa
    import scipy.signal

    factor = math.ceil(orig_sr / target_sr)
    if factor <= 1:
        return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")
    if orig_sr != factor * target_sr:
        y = librosa.resample(y, orig_sr=orig_sr, target_sr=factor * target_sr, res_type="soxr_hq")
    low_pass = _decimation_filter(factor, target_sr)
    return scipy.signal.oaconvolve(y.astype(np.float32, copy=False), low_pass, mode="same")[::factor]


@lru_cache(maxsize=8)
def _decimation_filter(factor: int, target_sr: int) -> np.ndarray:
    """Kaiser low-pass at ``factor * target_sr``: flat to 98 % of the new Nyquist, -100 dB from 100 %."""
    import scipy.signal

    rate, nyquist = factor * target_sr, target_sr / 2
    width = 0.02 * nyquist
    taps, beta = scipy.signal.kaiserord(100.0, width / (rate / 2))
    return scipy.signal.firwin(taps | 1, nyquist - width / 2, window=("kaiser", beta), fs=rate).astype(
        np.float32
    )


def _floor2(seconds: float) -> str:
    """Seconds rounded down to 0.01 s, so that a clip just under a limit never reads as meeting it."""
    return f"{math.floor(seconds * 100) / 100:.2f}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None):
    """librosa's (Slaney) mel filterbank, as a sparse matrix: each band covers only a few FFT bins, so
    the product costs about 1/50 of a dense one and needs no BLAS threads."""
    import librosa
    import scipy.sparse

    dense = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return scipy.sparse.csr_array(dense.astype(np.float32))


@lru_cache(maxsize=8)
def _stft_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window librosa.stft uses."""
    import scipy.signal

    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel power spectrogram in dB, shape ``(n_mels, frames)``, row 0 the lowest band.

    DCASE baseline convention: ``10 * log10(mel_power + 1e-10)`` with no top_db clipping, so that the
    absolute level, which faults change, is kept. Framing is librosa's ``stft(center=True)`` with zero
    padding and a periodic Hann window; it is computed here in float32 with a cached window and a sparse
    filterbank, which gives the same decibels (within 1e-4 dB) in under half the time.
    """
    import scipy.fft

    n_fft, hop, half = params.n_fft, params.hop_length, params.n_fft // 2
    y = np.asarray(y, dtype=np.float32)
    n_frames = 1 + (len(y) + 2 * half - n_fft) // hop
    basis = _mel_basis(params.sr, n_fft, params.n_mels, params.fmin, params.fmax)
    out = np.empty((params.n_mels, n_frames), dtype=np.float32)
    # In chunks of frames, each padded on its own (librosa's center=True zero padding), so that an hour of
    # sound costs its log-mel, not a padded copy of it and its complex spectrum.
    for at in range(0, n_frames, LOG_MEL_CHUNK_FRAMES):
        count = min(LOG_MEL_CHUNK_FRAMES, n_frames - at)
        low, high = at * hop - half, (at + count - 1) * hop + n_fft - half  # sample span of these frames
        piece = np.pad(y[max(low, 0) : min(high, len(y))], (max(0, -low), max(0, high - len(y))))
        frames = np.lib.stride_tricks.sliding_window_view(piece, n_fft)[::hop]
        spec = scipy.fft.rfft(frames * _stft_window(n_fft), axis=1)
        if params.power == 2.0:
            power = np.square(spec.real)
            power += np.square(spec.imag)
        else:
            power = np.abs(spec) ** params.power
        mel = basis @ power.T
        out[:, at : at + count] = 10.0 * np.log10(mel + 1e-10)
    return out


def log_mel_file(
    source: str | Path | bytes,
    params: FeatureParams,
    *,
    name: str | None = None,
    max_seconds: float | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """File (or bytes) -> log-mel in dB, with every input check: the path every caller takes. ``notes``, if
    given, gets what the answer should say about reading the file (``load_audio``)."""
    y = load_audio(
        source, params.sr, name=name, min_seconds=min_seconds(params), max_seconds=max_seconds, notes=notes
    )
    return log_mel(y, params)


def window_starts(n_frames: int, params: FeatureParams) -> np.ndarray:
    """First frame of each model window: every ``window_hop_frames``, plus one aligned with the end."""
    if n_frames <= params.window_frames:
        return np.zeros(1, dtype=int)  # one window, repeated to fill it when shorter (see ``windows``)
    last = n_frames - params.window_frames
    starts = list(range(0, last + 1, params.window_hop_frames))
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts, dtype=int)


def windows(spec_db: np.ndarray, params: FeatureParams, *, name: str = "audio") -> np.ndarray:
    """Cut a ``(n_mels, frames)`` log-mel into model windows ``(n_windows, n_mels, window_frames)``.

    A recording shorter than one window (from ``MIN_SECONDS`` up) gives one window, filled by repeating
    its frames (see ``is_padded``): a repeated steady sound has the band levels of the original, where
    silence or zeros would read as a sudden drop.
    """
    if spec_db.shape[0] != params.n_mels:
        raise AudioInputError(name, f"expected {params.n_mels} mel bands, got {spec_db.shape[0]}")
    if spec_db.shape[1] < 1:
        raise AudioInputError(name, "the recording holds no frames")
    if is_padded(spec_db.shape[1], params):
        spec_db = np.pad(spec_db, ((0, 0), (0, params.window_frames - spec_db.shape[1])), mode="wrap")
    starts = window_starts(spec_db.shape[1], params)
    idx = starts[:, None] + np.arange(params.window_frames)[None, :]
    return np.ascontiguousarray(np.transpose(spec_db[:, idx], (1, 0, 2)))


def is_padded(n_frames: int, params: FeatureParams) -> bool:
    """True when a log-mel of ``n_frames`` is shorter than one window and is filled by repetition."""
    return n_frames < params.window_frames


def padding_note(n_frames: int, params: FeatureParams) -> str | None:
    """What the answer says about a recording shorter than one window (None when it is not)."""
    if not is_padded(n_frames, params):
        return None
    return (
        f"The recording is {n_frames * params.frame_seconds:.2f} s long, shorter than the model's "
        f"{params.window_seconds:.1f} s window; it was repeated to fill one window."
    )


def min_seconds(params: FeatureParams) -> float:
    """Shortest recording accepted: ``MIN_SECONDS``, and never less than one FFT frame."""
    return max(MIN_SECONDS, params.n_fft / params.sr)


def log_mel_to_image(spec_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """8-bit grayscale image of a log-mel: low frequencies at the bottom, time to the right."""
    scaled = (spec_db - params.db_min) / (params.db_max - params.db_min) * 255.0
    return np.flipud(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def max_frames(params: FeatureParams, max_seconds: float) -> int:
    """Frames of the longest recording allowed (``log_mel`` frames a recording of n samples n // hop + 1)."""
    return int(round(max_seconds * params.sr)) // params.hop_length + 1


def image_to_log_mel(
    image: object, params: FeatureParams, *, name: str = "image", max_seconds: float | None = None
) -> np.ndarray:
    """Read a spectrogram image (path, bytes, PIL image or array) back into log-mel decibels.

    Accepts 8-bit grayscale, or RGB(A) whose three colour channels are equal (a gray image saved as
    colour). Colour-mapped pictures and images of the wrong height are refused with a message that says
    what is expected. With ``max_seconds``, an image wider than the frames of a recording that long is
    refused; the size is read from the file's header, before its pixels are decoded, and decompression
    bombs (PIL's limit) are refused with a message.
    """
    from PIL import Image, UnidentifiedImageError

    widest = None if max_seconds is None else max_frames(params, max_seconds)
    try:
        if isinstance(image, (str, Path, bytes)):
            with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as im:
                _check_image_size(im.size, params, name, widest)
                im.load()
                arr = _image_array(im)
        elif isinstance(image, Image.Image):
            _check_image_size(image.size, params, name, widest)
            arr = _image_array(image)
        else:
            arr = np.asarray(image)
    except Image.DecompressionBombError as exc:
        # PIL refuses before decoding and says how many pixels the header claims.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)) / 1e6:.0f} million pixels" if claimed else "too many pixels"
        raise AudioInputError(
            name,
            f"the image holds {size}, more than {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} million "
            "(a decompression bomb); a spectrogram is "
            f"{params.n_mels} pixels high and {_width_range(params, widest)} wide",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise AudioInputError(name, f"not a readable image ({_short(exc)})") from None
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
        elif arr.shape[2] == 3:
            spread = np.ptp(arr.astype(np.int16), axis=2).max() if arr.size else 0
            if spread > 2:
                raise AudioInputError(
                    name,
                    "this looks like a colour-mapped picture; expected an 8-bit grayscale spectrogram "
                    "(low frequencies at the bottom, time to the right)",
                )
            arr = arr[:, :, 0]
        else:
            raise AudioInputError(name, f"unsupported image with {arr.shape[2]} channels")
    if arr.ndim != 2:
        raise AudioInputError(name, "expected a 2-D grayscale spectrogram image")
    if arr.dtype != np.uint8:
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 255 or not np.isfinite(arr).all()):
            raise AudioInputError(name, "pixel values must be 8-bit (0 to 255)")
        arr = arr.astype(np.uint8)
    height, width = arr.shape
    _check_image_size((width, height), params, name, widest)
    if int(arr.max()) == int(arr.min()):
        raise AudioInputError(name, "the image is blank (every pixel has the same value)")
    db = params.db_min + np.flipud(arr).astype(np.float32) / 255.0 * (params.db_max - params.db_min)
    return np.ascontiguousarray(db, dtype=np.float32)


def _width_range(params: FeatureParams, widest: int | None) -> str:
    return f"at least {params.window_frames}" + ("" if widest is None else f" and at most {widest}")


def _check_image_size(size: tuple[int, int], params: FeatureParams, name: str, widest: int | None) -> None:
    width, height = size
    if height != params.n_mels:
        raise AudioInputError(
            name,
            f"the image is {width}x{height} pixels; a spectrogram must be {params.n_mels} pixels high "
            f"(one row per mel band) and {_width_range(params, widest)} wide",
        )
    if width < params.window_frames:
        raise AudioInputError(
            name, f"the image is {width} pixels wide; at least {params.window_frames} frames are needed"
        )
    if widest is not None and width > widest:
        seconds = (widest - 1) * params.frame_seconds
        raise AudioInputError(
            name,
            f"the image is {width} pixels wide, a recording of {(width - 1) * params.frame_seconds:.0f} s; "
            f"at most {widest} frames ({seconds:g} s) can be scored",
        )


def _image_array(im: object) -> np.ndarray:
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode in ("I;16", "I", "F"):
        raise ValueError(f"{im.mode} images are not 8-bit; save the spectrogram as 8-bit grayscale")
    if im.mode == "P":
        return np.asarray(im.convert("RGB"))
    if im.mode == "LA":
        return np.asarray(im)[:, :, 0]
    return np.asarray(im.convert("RGB"))


# A recording's top bands count as missing when they lie this far below its typical level against the
# reference (a codec's low-pass, a low sample rate, an upsampling filter).
BAND_DROP_DB = 3.0
# The same against a user's reference: real machines vary more near the top of the band than the synthetic
# gearbox; a codec's cliff (30 to 60 dB) still counts.
REFERENCE_BAND_DROP_DB = 10.0
# A band this far below its neighbours is empty (what a low sample rate leaves), not just quiet.
EMPTY_BAND_DB = 30.0
# Below this the recording misses too much of the band the model listens to: it is refused.
MIN_BAND_HZ = 6000.0


def missing_top_bands(
    band_level_db: np.ndarray, profile_db: np.ndarray, *, drop_db: float = BAND_DROP_DB, context: int = 8
) -> int:
    """How many of the top bands a recording does not carry.

    ``band_level_db`` is the recording's level per band, ``profile_db`` the normal level per band of the
    reference it is compared with. The missing bands are the lowest run of bands, reaching the top band, that
    all lie more than ``drop_db`` below the recording's deviation from the profile in the ``context`` bands
    just below them (median). Faults add energy, so they seldom open such a run; a codec's low-pass, a low
    sample rate or an upsampling filter does, with a cliff of 5 to 60 dB.
    """
    deviation = np.asarray(band_level_db, np.float64) - np.asarray(profile_db, np.float64)
    n = len(deviation)
    overall = float(np.median(deviation[n // 4 :]))
    firsts = np.arange(n // 2, n)
    if len(firsts) == 0:
        return 0
    # For every candidate first band at once (one median call, not one per band: this runs on every clip):
    # the median deviation of the ``context`` bands below it, and the highest deviation from it to the top.
    if firsts[0] >= context:
        below = np.median(np.lib.stride_tricks.sliding_window_view(deviation, context)[firsts - context], axis=1)
    else:  # fewer bands than the context below the first candidates: each takes what there is
        padded = np.concatenate([np.full(context, np.nan), deviation])
        below = np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, context)[firsts], axis=1)
    # A fault that raises the bands below (a resonance) must not make the normal bands above it look
    # missing: the run must also lie below the recording's deviation over most of the band.
    typical = np.minimum(below, overall)
    run_max = np.maximum.accumulate(deviation[::-1])[::-1][firsts]
    missing = run_max < typical - drop_db
    return int(n - firsts[np.argmax(missing)]) if missing.any() else 0


def fill_top_bands(spec_db: np.ndarray, n_missing: int, profile_db: np.ndarray, *, context: int = 3) -> np.ndarray:
    """The log-mel with its top ``n_missing`` bands replaced by the reference's normal level, moved frame by
    frame with the bands just below them: the missing bands then count as normal, and the score rests on
    the bands the recording and the reference share."""
    if n_missing <= 0:
        return spec_db
    n = spec_db.shape[0]
    first = n - n_missing
    below = slice(max(0, first - context), first)
    offset = (spec_db[below] - np.asarray(profile_db, np.float32)[below, None]).mean(axis=0)
    out = np.array(spec_db, dtype=np.float32, copy=True)
    out[first:] = np.asarray(profile_db, np.float32)[first:, None] + offset[None, :]
    return out


# Level losses up to this (dB) across the shared bands are what codecs, converters and filters take away;
# the bundled model's input is brought back to normal level from them (see ``Detector.shared_bands``).
LEVEL_TOLERANCE_DB = 1.0


def level_offset(band_level_db: np.ndarray, profiles_db: np.ndarray, n_shared: int) -> float:
    """The recording's overall level against the nearest normal profile, in dB, over its first ``n_shared``
    bands: the median deviation, which faults (a few bands) barely move and a gain change moves whole.

    ``profiles_db`` is one profile per row (e.g. per training domain).
    """
    level = np.asarray(band_level_db, np.float64)[:n_shared]
    profiles = np.atleast_2d(np.asarray(profiles_db, np.float64))[:, :n_shared]
    offsets = np.median(level[None, :] - profiles, axis=1)
    spread = np.abs(level[None, :] - profiles - offsets[:, None]).mean(axis=1)
    return float(offsets[int(np.argmin(spread))])
