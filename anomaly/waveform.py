"""Waveform preparation: decoded samples -> a checked, mono, float32 waveform at the model's rate.

Refuses silence, non-finite samples and samples far beyond full scale; trims an encoder's digital padding;
downmixes; resamples keeping the band the model hears (``resample``), in bounded memory for long
recordings (``MonoStream``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

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

# ``MonoStream`` downmixes and resamples pieces of STREAM_PIECE_S, each with STREAM_CONTEXT_S of context on
# either side, and cuts them back to their own span (the result equals resampling the whole recording, up
# to float rounding).
STREAM_PIECE_S = 30
STREAM_CONTEXT_S = 1


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
