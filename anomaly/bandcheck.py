"""Which bands a recording really carries, and what is scored in place of the rest.

A lossy codec's low-pass, a low sample rate or an upsampling filter leaves the top bands empty. They are
filled with the scorer's normal level, so that what the recording never carried is not scored as a fault;
below ``MIN_BAND_HZ`` too little is left and the recording is refused. Each scorer says what its normal
level is and how deep a cliff counts as missing (``Scorer.band_levels``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from anomaly.errors import AudioInputError
from anomaly.features import EMPTY_BAND_DB, MIN_BAND_HZ, FeatureParams, fill_top_bands, missing_top_bands


@lru_cache(maxsize=8)
def _band_hz(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    hz = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
    hz.setflags(write=False)
    return hz


def band_hz(params: FeatureParams) -> np.ndarray:
    """Centre frequency of each mel band (Hz), computed once per setting (every analysis checks its bands)."""
    return _band_hz(params.n_mels, float(params.fmin), float(params.fmax or params.sr / 2))


def shared_bands(
    spec_db: np.ndarray,
    level: np.ndarray,
    profile: np.ndarray,
    drop_db: float,
    params: FeatureParams,
    *,
    name: str = "audio",
) -> tuple[np.ndarray, list[str], int]:
    """The log-mel to score, what the answer says about the bands it lacks, and how many bands (from the
    bottom) it shares with normal. ``level``: the recording's level per band; ``profile``: the normal one;
    ``drop_db``: how far below normal the top bands must fall to count as cut off."""
    missing = missing_top_bands(level, profile, drop_db=drop_db)
    bands = band_hz(params)
    if missing and bands[len(bands) - missing - 1] < MIN_BAND_HZ:
        # Refuse only a band that is really empty (a low sample rate: 60 dB and more down); a quieter
        # top half is the recording's own sound, scored as it is.
        first = len(level) - missing
        deviation = level - profile
        if np.median(deviation[first:]) > np.median(deviation[max(0, first - 8) : first]) - EMPTY_BAND_DB:
            missing = 0
    if not missing:
        return spec_db, [], len(level)
    heard_hz = float(bands[len(bands) - missing - 1])
    top_hz = (params.fmax or params.sr / 2) / 1000
    if heard_hz < MIN_BAND_HZ:
        raise AudioInputError(
            name,
            f"the recording carries sound only up to about {heard_hz / 1000:.1f} kHz (a low sample "
            f"rate or a lossy codec); the model listens up to {top_hz:.1f} kHz and needs sound up to "
            f"at least {MIN_BAND_HZ / 1000:.1f} kHz: record at 16 kHz or more, or upload WAV or FLAC",
        )
    note = (
        f"This recording carries sound up to about {heard_hz / 1000:.1f} kHz (a lossy codec or a low "
        f"sample rate); the {missing} band(s) above it, up to {top_hz:.1f} kHz, were not heard and "
        "count as normal."
    )
    return fill_top_bands(spec_db, missing, profile), [note], len(level) - missing
