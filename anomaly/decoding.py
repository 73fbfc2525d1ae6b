"""Reading recordings: which formats, which decoder, and the limits checked before and while decoding.

``load_audio`` is the one way a file (or the bytes of an upload) becomes a waveform: libsndfile reads WAV,
FLAC and AIFF, FFmpeg (PyAV) the compressed formats; sample rate, duration and sample count are checked
from the header before any sample is decoded. What reading found (a file cut short) goes into ``notes``.
The decoded samples are then validated, downmixed and resampled by ``anomaly.waveform``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from anomaly.errors import AudioInputError
from anomaly.waveform import MonoStream, prepare_waveform

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
# Recordings longer than this (only without a duration limit) are decoded in pieces (``waveform.MonoStream``)
# so that memory stays bounded however long, fast or wide the file is.
STREAM_ABOVE_S = MAX_SECONDS


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
        data, file_sr = _read_ffmpeg(source, label, max_seconds, sf_problem, sr, notes)
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


# libvorbis (ffmpeg's "-c:a libvorbis", oggenc) at 16 kHz adds 0.5 to 1.6 dB of power above 1.7 kHz: a normal
# example scored 1.19 as WAV and 2.21 (SEVERE) as such an Ogg. The same rise is what a lubrication fault
# adds, so it is not evened out; the answer says so instead. At 44.1 and 48 kHz Vorbis keeps the label.
VORBIS_FAITHFUL_HZ = 32000
LOW_RATE_VORBIS = (
    "This is Ogg Vorbis at {khz:g} kHz: at such low rates the Vorbis encoder adds about 1 dB of noise above "
    "2 kHz, which can read as a fault (a normal recording scored SEVERE ANOMALY in our tests). If the verdict "
    "surprises you, upload the original WAV or FLAC, or record at 44.1 kHz."
)


def _read_ffmpeg(
    source: str | Path | bytes,
    label: str,
    max_seconds: float | None,
    sf_problem: str | None,
    sr: int,
    notes: list[str] | None = None,
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
        if notes is not None and stream.codec_context.name == "vorbis" and file_sr < VORBIS_FAITHFUL_HZ:
            notes.append(LOW_RATE_VORBIS.format(khz=file_sr / 1000))
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
    reason = getattr(exc, "error_string", None) or short_reason(exc)
    if not isinstance(source, bytes):
        reason = reason.replace(str(source), label)
    return reason.rstrip(".")


def _ffmpeg_problem(exc: BaseException) -> str:
    # strerror, not str(exc): the latter quotes the path of the file.
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message, at most 160 characters, for a one-line answer."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
