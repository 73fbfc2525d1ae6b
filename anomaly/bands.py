"""Recordings that miss the top mel bands (a codec's low-pass, a low sample rate, an upsampling filter):
how many bands are missing, filling them with the reference's normal level, and the overall level offset.

``shared_bands`` is the band check every recording goes through before it is scored: the top bands it lacks
are filled with the scorer's normal level (``Scorer.band_levels``), so that what the recording never carried
is not scored as a fault; below ``MIN_BAND_HZ`` too little is left and the recording is refused.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams

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
            f"at least {MIN_BAND_HZ / 1000:.1f} kHz: record again at 16 kHz or more, without a lossy "
            "codec (converting this file to WAV or FLAC cannot bring back sound it never carried)",
        )
    note = (
        f"This recording carries sound up to about {heard_hz / 1000:.1f} kHz (a lossy codec or a low "
        f"sample rate); the {missing} band(s) above it, up to {top_hz:.1f} kHz, were not heard and "
        "count as normal."
    )
    return fill_top_bands(spec_db, missing, profile), [note], len(level) - missing
