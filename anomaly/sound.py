"""A recording as a reference hears it: one decode, three resolutions.

A user's machine can show a fault in its overall level, in one narrow line of its spectrum or in its timing
(a valve that clicks late, a bearing that knocks). The 128 mel bands hear the first kind and blur the other
two: a mel band is 50 to 400 Hz wide, and a mean over a clip keeps no rhythm. So a ``Sound`` keeps, beside
the log-mel every path uses, the waveform it came from (already decoded, downmixed, resampled and trimmed by
``anomaly.features``), and derives on first use:

- ``fine_frames``: power spectra on a linear grid of ``sr / FINE_N_FFT`` Hz (3.9 Hz at 16 kHz), one every
  ``FINE_HOP`` samples. Block ``fine`` is their mean in dB; block ``lines`` keeps only the tonal lines
  (how far each bin stands above its neighbourhood), so that a line that moves by a few hertz, or appears,
  changes a few dimensions that are otherwise still, instead of a few among 2049 noisy ones;
- ``envelope_frames``: the level in dB of ``TIMING_BANDS_HZ`` broad bands every ``TIMING_HOP`` samples
  (8 ms at 16 kHz): their modulation spectrum is the machine's rhythm, whatever its loudness.

Block features of a segment (a span of log-mel frames) are then cheap slices and means of these
(``segment_blocks``). A spectrogram image has no waveform: only the mel blocks can be heard from it
(``Sound.has_wave``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

# Blocks read from the log-mel alone, and blocks that need the waveform.
MEL_BLOCKS = ("pmean", "dbmean", "dbstd", "dbmax", "level")
WAVE_BLOCKS = ("fine", "lines", "timing")
BLOCKS = MEL_BLOCKS + WAVE_BLOCKS

FINE_N_FFT = 4096
FINE_HOP = 2048
# ``lines``: a fine bin counts as a line by how far it stands above the median of the bins around it
# (``LINE_FLOOR_BINS``, about 250 Hz), less ``LINE_DB``: averaged over a second or more, noise stays below
# that, so only tonal lines are kept, whatever the recording's level.
LINE_FLOOR_BINS = 65
LINE_DB = 6.0
TIMING_N_FFT = 256
TIMING_HOP = 128
# Broad bands whose envelopes carry the rhythm (Hz); the last edge is cut at the Nyquist frequency.
TIMING_BANDS_HZ = (0.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
# Modulation bands (Hz), log-spaced: a valve's 1 Hz cycle to a shaft's 60 Hz (the envelope's Nyquist is 62.5 Hz).
MODULATION_EDGES_HZ = tuple(float(f) for f in np.geomspace(0.5, 60.0, 15))
POWER_FLOOR = 1e-12


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    import scipy.signal

    return scipy.signal.get_window("hann", n, fftbins=True).astype(np.float32)


def _frames(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Power spectra of frames of ``y`` starting every ``hop`` samples (the last one may be zero-padded);
    at least one frame."""
    import scipy.fft

    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    n = 1 + (len(y) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[: n * hop : hop]
    spec = scipy.fft.rfft(frames * _hann(n_fft), axis=1)
    power = np.square(spec.real)
    power += np.square(spec.imag)
    return power.astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class Sound:
    """One recording: its log-mel in dB ``(n_mels, frames)`` and, when it came from audio, its waveform.

    ``hop_length`` and ``sr`` tie the two together (log-mel frame ``i`` starts at sample ``i * hop_length``).
    """

    log_mel: np.ndarray
    sr: int
    hop_length: int
    wave: np.ndarray | None = field(default=None, repr=False)
    # What reading the file found that the answer should say (a file cut short).
    read_notes: tuple[str, ...] = ()
    # Block vectors already computed, by (start, stop, block): a recording scored against several
    # references (the benchmark's candidates, a calibration changed on the page) is summarised once.
    _blocks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def has_wave(self) -> bool:
        return self.wave is not None

    @property
    def n_frames(self) -> int:
        return int(self.log_mel.shape[1])

    def with_log_mel(self, log_mel: np.ndarray) -> Sound:
        """The same recording with another log-mel (the band-gap repair of ``anomaly.bands.shared_bands``)."""
        return Sound(log_mel, self.sr, self.hop_length, self.wave, self.read_notes)

    def scaled(self, gain_db: float) -> Sound:
        """The recording ``gain_db`` louder (every block but ``level`` and ``timing`` moves with it)."""
        gain = 10.0 ** (gain_db / 20.0)
        wave = None if self.wave is None else (self.wave * np.float32(gain)).astype(np.float32)
        return Sound(self.log_mel + np.float32(gain_db), self.sr, self.hop_length, wave, self.read_notes)

    @cached_property
    def fine_frames(self) -> np.ndarray:
        """``(frames, FINE_N_FFT // 2 + 1)`` power spectra, one every ``FINE_HOP`` samples."""
        return _frames(self._wave_or_raise(), FINE_N_FFT, FINE_HOP)

    @cached_property
    def fine_hz(self) -> np.ndarray:
        return np.fft.rfftfreq(FINE_N_FFT, 1.0 / self.sr)

    @cached_property
    def envelope_frames(self) -> np.ndarray:
        """``(len(TIMING_BANDS_HZ) - 1, frames)``: each broad band's level in dB every ``TIMING_HOP``
        samples."""
        power = _frames(self._wave_or_raise(), TIMING_N_FFT, TIMING_HOP)
        hz = np.fft.rfftfreq(TIMING_N_FFT, 1.0 / self.sr)
        edges = timing_edges(self.sr)
        bands = [power[:, (hz >= lo) & (hz < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        return (10.0 * np.log10(np.stack(bands) + POWER_FLOOR)).astype(np.float32)

    def _wave_or_raise(self) -> np.ndarray:
        if self.wave is None:
            raise ValueError("this sound has no waveform (a spectrogram image): only mel blocks can be heard")
        return self.wave


def timing_edges(sr: int) -> list[float]:
    top = sr / 2
    return [e for e in TIMING_BANDS_HZ if e < top] + [top]


def _fine_block(sound: Sound, start: int, stop: int) -> np.ndarray:
    """Mean power on the fine grid over log-mel frames ``[start, stop)``, in dB."""
    frames = sound.fine_frames
    first_sample, last_sample = start * sound.hop_length, stop * sound.hop_length
    lo = min(len(frames) - 1, -(-first_sample // FINE_HOP))
    hi = max(lo + 1, min(len(frames), (last_sample - FINE_N_FFT) // FINE_HOP + 1))
    return 10.0 * np.log10(frames[lo:hi].mean(axis=0, dtype=np.float64) + POWER_FLOOR)


def _lines_block(sound: Sound, start: int, stop: int) -> np.ndarray:
    """Tonal lines over log-mel frames ``[start, stop)``: dB above the local median, less ``LINE_DB``,
    floored at 0."""
    from scipy.ndimage import median_filter

    db = _fine_block(sound, start, stop)
    return np.maximum(db - median_filter(db, size=LINE_FLOOR_BINS, mode="nearest") - LINE_DB, 0.0)


def _timing_block(sound: Sound, start: int, stop: int) -> np.ndarray:
    """Modulation spectrum (dB) of each broad band's envelope over log-mel frames ``[start, stop)``,
    pooled into ``MODULATION_EDGES_HZ``: ``(bands * modulation bands,)``.

    The envelope is in dB and its mean is removed, so the block hears the rhythm, not the loudness.
    """
    env = sound.envelope_frames
    per_frame = sound.hop_length / TIMING_HOP
    lo = int(start * per_frame)
    hi = max(lo + 8, int(stop * per_frame))
    seg = np.asarray(env[:, lo:hi], np.float64)
    seg = seg - seg.mean(axis=1, keepdims=True)
    window = np.hanning(seg.shape[1])
    spectrum = np.abs(np.fft.rfft(seg * window, axis=1)) ** 2 / max(window.sum(), 1.0)
    freqs = np.fft.rfftfreq(seg.shape[1], TIMING_HOP / sound.sr)
    edges = np.asarray(MODULATION_EDGES_HZ)
    centres = np.sqrt(edges[:-1] * edges[1:])
    pooled = np.empty((seg.shape[0], len(centres)))
    for j, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (freqs >= a) & (freqs < b)
        if inside.any():
            pooled[:, j] = spectrum[:, inside].mean(axis=1)
        else:  # a short segment's bins are coarser than the band: the nearest bin stands for it
            pooled[:, j] = spectrum[:, int(np.argmin(np.abs(freqs - centres[j])))]
    return (10.0 * np.log10(pooled + POWER_FLOOR)).ravel()


def mel_blocks(spec_db: np.ndarray, blocks: Sequence[str]) -> dict[str, np.ndarray]:
    """One vector per mel block for a log-mel segment ``(n_mels, frames)`` in dB."""
    db = np.asarray(spec_db, dtype=np.float64)
    power = None
    out: dict[str, np.ndarray] = {}
    for block in blocks:
        if block in ("pmean", "level") and power is None:
            power = np.power(10.0, db / 10.0)
        if block == "pmean":
            out[block] = 10.0 * np.log10(power.mean(axis=1) + POWER_FLOOR)
        elif block == "dbmean":
            out[block] = db.mean(axis=1)
        elif block == "dbstd":
            out[block] = db.std(axis=1)
        elif block == "dbmax":
            out[block] = db.max(axis=1)
        elif block == "level":
            out[block] = np.array([10.0 * np.log10(power.sum(axis=0).mean() + POWER_FLOOR)])
        else:
            raise ValueError(f"unknown mel block {block!r}")
    return out


def segment_blocks(sound: Sound, start: int, stop: int, blocks: Sequence[str]) -> dict[str, np.ndarray]:
    """The vector of each block for log-mel frames ``[start, stop)`` of ``sound`` (kept with the sound).

    Blocks that need the waveform are left out when the sound has none.
    """
    cache = sound._blocks
    missing = [b for b in blocks if (start, stop, b) not in cache]
    if missing:
        found = mel_blocks(sound.log_mel[:, start:stop], [b for b in missing if b in MEL_BLOCKS])
        if sound.has_wave:
            if "fine" in missing:
                found["fine"] = _fine_block(sound, start, stop)
            if "lines" in missing:
                found["lines"] = _lines_block(sound, start, stop)
            if "timing" in missing:
                found["timing"] = _timing_block(sound, start, stop)
        for block in missing:
            cache[(start, stop, block)] = found.get(block)
    return {b: cache[(start, stop, b)] for b in blocks if cache[(start, stop, b)] is not None}


def block_hz(block: str, sound_sr: int, band_hz: np.ndarray) -> np.ndarray | None:
    """Frequency (Hz) of each dimension of a block where it has one: the mel centres, the fine grid, or the
    top edge of each timing band's modulation rows; None for ``level``."""
    if block in ("pmean", "dbmean", "dbstd", "dbmax"):
        return np.asarray(band_hz, np.float64)
    if block in ("fine", "lines"):
        return np.fft.rfftfreq(FINE_N_FFT, 1.0 / sound_sr)
    if block == "timing":
        tops = np.asarray(timing_edges(sound_sr)[1:], np.float64)
        return np.repeat(tops, len(MODULATION_EDGES_HZ) - 1)
    return None
