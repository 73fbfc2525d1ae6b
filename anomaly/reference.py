"""What "normal" means after adapting: a reference fitted on a user's own normal recordings.

The bundled model knows only the synthetic gearbox it was trained on. Adapting to a real machine fits a
``Reference`` on a handful of its normal recordings instead, and that reference scores new recordings.
Its recipe was chosen by measurement on eleven real machines (``python -m anomaly realbench --candidates``,
``docs/real-benchmark.md``), by the mean of the three worst machines in the worse of two passes (as recorded,
and with every clip at one level), not by the mean:

- **Blocks** (``anomaly.sound``). Each segment of a recording (about as long as the calibration clips, at
  most 10 s) is summarised by a few blocks, all from one decode. From the log-mel: ``pmean`` (power averaged
  over the segment, then dB), ``dbmean``, ``dbstd`` (spread of each band over time), ``dbmax`` (loudest
  frame per band), ``level`` (overall power in dB). From the waveform: ``fine`` (mean power on a 3.9 Hz
  grid), ``lines`` (the tonal lines of that grid) and ``timing`` (modulation spectra of broad band
  envelopes). The default, ``dbstd + dbmax + timing``, hears how the bands move, their peaks and the
  machine's rhythm; only ``dbmax`` moves with microphone gain.
- **One distance per block, in the full standardised space.** Each block is standardised on the
  calibration segments (spreads floored at ``STD_FLOOR`` of their median) and scored by the distance to the
  nearest calibration segment (``"nearest"``) or a Ledoit-Wolf Mahalanobis distance (``"mahalanobis"``). No
  PCA cut: with ten clips a PCA keeps only the directions those clips span, and a new anomaly lives in the
  others.
- **Scores on one scale.** Each block's distance is divided by the mean distance of the calibration clips
  scored leave-one-clip-out, so 1.0 is a typical new normal clip in every block; the blocks are then
  averaged (``"mean"``), the largest is taken (``"max"``), or averaged with weights from how steady each
  block was on the user's own clips (``"stable"``, the default). A recording's score is the largest score of
  its segments.
- **Thresholds that admit how little they rest on.** From the leave-one-out scores of the calibration clips,
  log-normal upper prediction bounds (Student's t, ``sqrt(1 + 1/K)``, a spread pooled with a prior one):
  NEEDS MAINTENANCE above the bound one new normal clip in ten would pass, SEVERE ANOMALY above one in a
  hundred. With three clips these bounds are wide, and they narrow as clips are added; below
  ``NARROW_CLIPS`` every verdict says so (``Reference.caution``).

Fitted state is plain arrays (``to_arrays`` / ``from_arrays``), saved in calibration files without
pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import stats

from anomaly.distances import DEFAULT_DISTANCE, DISTANCES, BlockDistance
from anomaly.scoring import Thresholds
from anomaly.sound import BLOCKS, WAVE_BLOCKS, Sound, block_hz, mel_blocks, segment_blocks

CLIP_BLOCKS = BLOCKS
FUSIONS = ("mean", "max", "stable")
# Chosen by the mean of the three worst real machines (docs/real-benchmark.md).
DEFAULT_BLOCKS = ("dbstd", "dbmax", "timing")
DEFAULT_FUSION = "stable"
# Longest segment scored as one piece; longer recordings are scored in overlapping segments.
MAX_SEGMENT_SECONDS = 10.0
# The pictures look at a recording second by second: where it departs from the levels the normal clips
# hold over a second (``piece_departures``), whatever the segment length the score uses.
PIECE_SECONDS = 1.0
MAINTENANCE_COVERAGE = 0.9
SEVERE_COVERAGE = 0.99
# Prior spread of the log score of a new normal clip, worth PRIOR_DOF clips (see prediction_thresholds).
PRIOR_LOG_SPREAD = 0.3
PRIOR_DOF = 4
# Spreads of a block's dimensions are never taken below this (dB) where most dimensions are still: the
# ``lines`` block is 0 in every bin that holds no line, and a new line must count in dB, not in rounding.
MIN_SCALE_DB = {"lines": 1.0}
# A calibration clip scored against the others (leave one out) counts as at least this share of a typical
# one: a clip uploaded twice scores 0 against its twin, and a log-normal bound cannot take a 0.
LOO_FLOOR = 0.05
# A calibration on fewer clips than this has wide thresholds, and the answer says so.
NARROW_CLIPS = 10


@dataclass(frozen=True)
class Recipe:
    """Which blocks, which distance and which fusion a reference uses."""

    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    distance: str = DEFAULT_DISTANCE
    fusion: str = DEFAULT_FUSION

    def __post_init__(self):
        unknown = [b for b in self.blocks if b not in CLIP_BLOCKS]
        if unknown or not self.blocks:
            raise ValueError(f"unknown blocks {unknown}; choose from {list(CLIP_BLOCKS)}")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; choose from {list(DISTANCES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {list(FUSIONS)}")

    @property
    def name(self) -> str:
        return f"{'+'.join(self.blocks)} / {self.distance} / {self.fusion}"

    @property
    def needs_wave(self) -> bool:
        return any(b in WAVE_BLOCKS for b in self.blocks)

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "distance": self.distance, "fusion": self.fusion}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        return cls(tuple(data["blocks"]), str(data["distance"]), str(data["fusion"]))

    @classmethod
    def parse(cls, name: str) -> Recipe:
        """The recipe named ``"blocks+... / distance / fusion"`` (``Recipe.name``); ValueError if it names
        none."""
        parts = [p.strip() for p in str(name).split("/")]
        if len(parts) != 3:
            raise ValueError(f"a recipe reads 'blocks / distance / fusion' (e.g. {cls().name!r}), not {name!r}")
        return cls(tuple(b.strip() for b in parts[0].split("+") if b.strip()), parts[1], parts[2])


def segment_starts(n_frames: int, segment_frames: int) -> np.ndarray:
    """First frame of each segment: one segment for a recording no longer than ``segment_frames``, else
    segments every half segment plus one aligned with the end."""
    if n_frames <= segment_frames:
        return np.zeros(1, dtype=int)
    last = n_frames - segment_frames
    starts = list(range(0, last + 1, max(1, segment_frames // 2)))
    if starts[-1] != last:
        starts.append(last)
    return np.asarray(starts, dtype=int)


def segment_features(
    sound: Sound, segment_frames: int, blocks: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Block features of each segment of one sound: ``({block: (n_segments, dim)}, starts)``; blocks the
    sound cannot give (no waveform) are absent."""
    starts = segment_starts(sound.n_frames, segment_frames)
    per = [segment_blocks(sound, s, s + segment_frames, blocks) for s in starts]
    return {b: np.stack([p[b] for p in per]) for b in per[0]}, starts


def prediction_thresholds(normal_scores: np.ndarray) -> Thresholds:
    """Log-normal upper prediction bounds for the score of one new normal clip.

    With K leave-one-out scores, the bound that a new normal clip stays under with probability ``q`` is
    ``exp(m + t_q(dof) * s * sqrt(1 + 1/K))``, m the mean of the log scores. The spread ``s`` pools the
    clips' own spread with a prior one (``PRIOR_LOG_SPREAD``, worth ``PRIOR_DOF`` clips), so that three
    clips that happen to agree cannot give thresholds pinned to their scores, and three that happen to
    disagree cannot give absurd ones; ``dof = K - 1 + PRIOR_DOF``. Few clips give wide thresholds, many
    give thresholds set by the clips themselves.
    """
    return _bounds(normal_scores, None)


def _bounds(normal_scores: np.ndarray, n_clips: int | None) -> Thresholds:
    """``prediction_thresholds`` as if the same mean and spread had come from ``n_clips`` clips."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores) & (scores > 0)]
    if len(scores) < 2:
        raise ValueError("need scores of at least two normal clips to set thresholds")
    logs = np.log(scores)
    n = len(logs)
    spread = float(np.sqrt(((n - 1) * logs.var(ddof=1) + PRIOR_DOF * PRIOR_LOG_SPREAD**2) / (n - 1 + PRIOR_DOF)))
    n = n_clips or n
    dof = n - 1 + PRIOR_DOF
    width = spread * np.sqrt(1.0 + 1.0 / n)
    maintenance = float(np.exp(logs.mean() + stats.t.ppf(MAINTENANCE_COVERAGE, dof) * width))
    severe = float(np.exp(logs.mean() + stats.t.ppf(SEVERE_COVERAGE, dof) * width))
    return Thresholds(maintenance, severe, "lognormal prediction bound", MAINTENANCE_COVERAGE, SEVERE_COVERAGE)


def narrowing_note(normal_scores: np.ndarray) -> str | None:
    """What a calibration on fewer than ``NARROW_CLIPS`` clips should say with every verdict: its
    thresholds are wide, and how far more recordings would bring them down (same spread, ``NARROW_CLIPS``
    clips)."""
    n = int(np.sum(np.isfinite(normal_scores) & (np.asarray(normal_scores) > 0)))
    if n >= NARROW_CLIPS or n < 2:
        return None
    now, then = _bounds(normal_scores, None), _bounds(normal_scores, NARROW_CLIPS)
    lower = 1.0 - then.maintenance / now.maintenance
    return (
        f"Only {n} normal recordings were used to adapt: the thresholds are wide, so a fault can still pass as "
        f"NORMAL. With {NARROW_CLIPS - n} more ({NARROW_CLIPS} in all) the maintenance threshold would be about "
        f"{lower:.0%} lower."
    )


class Reference:
    """A user's normal recordings, as a scorer: ``fit`` on sounds of normal clips, ``score`` new ones.

    Parameters
    ----------
    recipe : blocks, distance and fusion (``Recipe``); the default was chosen on real machines.
    sr, hop_length : the log-mel's sample rate and samples per frame (``FeatureParams``).

    Examples
    --------
    >>> ref = Reference(sr=16000, hop_length=512).fit([sound1, sound2, sound3])  # doctest: +SKIP
    >>> scores, starts = ref.segment_scores(new_sound)  # doctest: +SKIP
    """

    def __init__(self, recipe: Recipe | None = None, *, sr: int, hop_length: int):
        self.recipe = recipe or Recipe()
        self.sr = int(sr)
        self.hop_length = int(hop_length)

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sr

    def sound(self, clip: Sound | np.ndarray) -> Sound:
        """A log-mel alone (a spectrogram image, or a caller with no waveform) as a ``Sound``."""
        return clip if isinstance(clip, Sound) else Sound(np.asarray(clip), self.sr, self.hop_length)

    # --- fitting --------------------------------------------------------------------------------

    def fit(self, clips: Sequence[Sound | np.ndarray]) -> Reference:
        """Fit on normal clips: ``Sound``s, or log-mels in dB (then only mel blocks can be used)."""
        if len(clips) < 2:
            raise ValueError("need at least two normal clips to fit a reference")
        sounds = [self.sound(c) for c in clips]
        blocks = self.recipe.blocks
        if self.recipe.needs_wave and not all(s.has_wave for s in sounds):
            raise ValueError(f"the recipe {self.recipe.name} needs the recordings, not only their log-mels")
        frames = [s.n_frames for s in sounds]
        cap = max(1, int(round(MAX_SEGMENT_SECONDS / self.frame_seconds)))
        self.segment_frames_ = int(min(np.median(frames), cap))
        per_clip = [segment_features(s, self.segment_frames_, blocks)[0] for s in sounds]
        groups = np.concatenate([[i] * len(p[blocks[0]]) for i, p in enumerate(per_clip)])
        self.distances_: dict[str, BlockDistance] = {}
        loo = np.zeros((len(blocks), len(sounds)))
        for j, block in enumerate(blocks):
            X = np.concatenate([p[block] for p in per_clip])
            min_scale = MIN_SCALE_DB.get(block, 1e-6)
            self.distances_[block] = BlockDistance(self.recipe.distance, min_scale=min_scale).fit(X)
            for i in range(len(sounds)):
                held = groups == i
                loo[j, i] = BlockDistance(self.recipe.distance, min_scale=min_scale).fit(X[~held]).score(X[held]).max()
        if not (loo > 0).any(axis=1).all():
            raise ValueError(
                "the normal recordings are copies of each other; calibrate on different recordings of the machine"
            )
        self.block_scales_ = np.maximum(loo.mean(axis=1), 1e-9)
        loo = np.maximum(loo, LOO_FLOOR * self.block_scales_[:, None])
        # How steady each block is on the user's own normals (spread of its log leave-one-out scores,
        # pooled with the prior): the "stable" fusion trusts steady blocks more.
        logs = np.log(np.maximum(loo / self.block_scales_[:, None], 1e-9))
        n = len(sounds)
        var = ((n - 1) * logs.var(axis=1, ddof=1) + PRIOR_DOF * PRIOR_LOG_SPREAD**2) / (n - 1 + PRIOR_DOF)
        self.block_weights_ = (1.0 / var) / np.sum(1.0 / var)
        self.normal_scores_ = self._fuse(loo / self.block_scales_[:, None], np.arange(len(blocks)))
        # The band a normal clip's spectrum spans, for the explanation and the familiarity check.
        spectra = np.stack([mel_blocks(s.log_mel, ("pmean",))["pmean"] for s in sounds])
        self.spectrum_mean_ = spectra.mean(axis=0)
        self.spectrum_low_ = spectra.min(axis=0)
        self.spectrum_high_ = spectra.max(axis=0)
        # Floored above 0: a band that never moved (a band-limited recording's empty top) is still a spread,
        # and a calibration file's spreads must be positive (``calibration.calibration_problems``).
        spreads = np.stack([np.asarray(s.log_mel, np.float64).std(axis=1) for s in sounds]).mean(axis=0)
        self.frame_spread_ = np.maximum(spreads, 0.01)
        # Each band's level over one-second pieces of the normal clips: what a second of normal sounds like.
        pieces = np.concatenate([_piece_means(s.log_mel, self.piece_frames) for s in sounds])
        self.piece_mean_ = pieces.mean(axis=0)
        self.piece_spread_ = np.maximum(pieces.std(axis=0), 0.5)
        self.n_clips_ = len(sounds)
        return self

    def _fuse(self, normalised: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Fuse block scores (one row per block in ``rows``, each 1.0 for a typical new normal)."""
        if self.recipe.fusion == "max":
            return normalised.max(axis=0)
        if self.recipe.fusion == "stable":
            w = self.block_weights_[rows]
            return (w[:, None] * normalised).sum(axis=0) / w.sum()
        return normalised.mean(axis=0)

    @property
    def thresholds(self) -> Thresholds:
        return prediction_thresholds(self.normal_scores_)

    @cached_property
    def caution(self) -> str | None:
        """What every verdict against this reference should say when it rests on too few clips."""
        return narrowing_note(self.normal_scores_)

    # --- scoring --------------------------------------------------------------------------------

    def block_segment_scores(
        self, clip: Sound | np.ndarray, *, heard_hz: float | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each block's score per segment (1.0 = a typical new normal clip) and each segment's first frame.

        Blocks the clip cannot give (no waveform) are absent. ``heard_hz``: the recording carries sound only
        below this (a codec's low-pass); fine and timing dimensions above it count as normal.
        """
        sound = self.sound(clip)
        feats, starts = segment_features(sound, self.segment_frames_, self.recipe.blocks)
        out = {}
        for j, block in enumerate(self.recipe.blocks):
            if block not in feats:
                continue
            X = feats[block]
            dist = self.distances_[block]
            if heard_hz is not None and block in WAVE_BLOCKS:
                unheard = block_hz(block, self.sr, np.zeros(0)) > heard_hz
                X = np.where(unheard[None, :], dist.mean_[None, :], X)
            out[block] = dist.score(X) / self.block_scales_[j]
        return out, starts

    def segment_scores(
        self, clip: Sound | np.ndarray, *, heard_hz: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score of each segment of one clip, and each segment's first frame."""
        per_block, starts = self.block_segment_scores(clip, heard_hz=heard_hz)
        rows = np.array([j for j, b in enumerate(self.recipe.blocks) if b in per_block])
        return self._fuse(np.stack(list(per_block.values())), rows), starts

    def score(self, clip: Sound | np.ndarray) -> float:
        """A recording's score: its largest segment score (1.0 = a typical new normal clip)."""
        return float(self.segment_scores(clip)[0].max())

    @property
    def piece_frames(self) -> int:
        return max(1, int(round(PIECE_SECONDS / self.frame_seconds)))

    def piece_departures(self, spec_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each one-second piece's first frame, and how far each of its bands lies from the normal clips'
        one-second levels, in their spreads (``(n_pieces, n_mels)``; files before these arrays: frames)."""
        if self.piece_mean_ is None:  # a calibration file older than the pieces
            db = np.asarray(spec_db, np.float64).T
            return np.arange(len(db)), (db - self.spectrum_mean_) / np.maximum(self.frame_spread_, 0.5)
        means = _piece_means(spec_db, self.piece_frames)
        starts = np.asarray(piece_starts(np.shape(spec_db)[1], self.piece_frames))
        return starts, (means - self.piece_mean_) / self.piece_spread_

    def anomaly_map(self, spec_db: np.ndarray) -> np.ndarray:
        """How far each time-frequency cell's second lies outside the normal clips' seconds, in spreads:
        0 within 2 spreads of that band's normal level, above it the excess."""
        starts, z = self.piece_departures(spec_db)
        n_frames = np.shape(spec_db)[1]
        owner = np.minimum(np.searchsorted(starts, np.arange(n_frames), side="right") - 1, len(starts) - 1)
        return np.maximum(np.abs(z) - 2.0, 0.0)[owner].T.astype(np.float32)

    def piece_scores(self, spec_db: np.ndarray, segment_scores: np.ndarray, segment_starts: np.ndarray):
        """One score per second for the timeline, and each piece's first frame: the score of the worst
        segment holding the piece, weighted by how far the piece departs (root-mean-square over bands, from
        ``piece_departures``) against the most departing piece of that segment. So the bars show where in a
        segment its score comes from, and the worst piece carries the recording's score."""
        starts, z = self.piece_departures(spec_db)
        if len(starts) < 2 or self.piece_mean_ is None:
            return segment_scores, segment_starts
        size = np.sqrt(np.mean(np.square(z), axis=1))
        seg = np.asarray(segment_starts)
        scores = np.asarray(segment_scores, dtype=np.float64)
        covers = (starts[:, None] >= seg[None, :]) & (starts[:, None] < seg[None, :] + self.segment_frames_)
        seg_of = np.where(
            covers.any(axis=1), np.argmax(np.where(covers, scores[None, :], -np.inf), axis=1), np.argmax(scores)
        )
        top = np.zeros(len(scores))
        np.maximum.at(top, seg_of, size)
        out = scores[seg_of] * np.where(top[seg_of] > 0, size / np.where(top[seg_of] > 0, top[seg_of], 1.0), 1.0)
        return out, starts

    def departures(self, spec_db: np.ndarray, band_hz: np.ndarray, *, top: int = 3, min_db: float = 3.0):
        """Where the clip's spectrum leaves the band its normal clips span: up to ``top`` regions, largest
        first, each ``{"hz": centre, "db": signed excess}`` (positive: louder than any normal clip)."""
        spectrum = mel_blocks(spec_db, ("pmean",))["pmean"]
        above = spectrum - self.spectrum_high_
        below = spectrum - self.spectrum_low_
        excess = np.where(above > 0, above, np.where(below < 0, below, 0.0))
        found = []
        order = np.argsort(-np.abs(excess))
        taken = np.zeros(len(excess), bool)
        for i in order:
            if abs(excess[i]) < min_db or len(found) >= top:
                break
            if taken[max(0, i - 4) : i + 5].any():
                continue  # the same region as a larger departure
            taken[i] = True
            found.append({"hz": float(band_hz[i]), "db": round(float(excess[i]), 1)})
        return found

    # --- persistence ----------------------------------------------------------------------------

    def to_arrays(self, prefix: str = "ref_") -> dict[str, np.ndarray]:
        arrays = {
            f"{prefix}block_scales": self.block_scales_,
            f"{prefix}block_weights": self.block_weights_,
            f"{prefix}normal_scores": self.normal_scores_,
            f"{prefix}spectrum_mean": self.spectrum_mean_,
            f"{prefix}spectrum_low": self.spectrum_low_,
            f"{prefix}spectrum_high": self.spectrum_high_,
            f"{prefix}frame_spread": self.frame_spread_,
            f"{prefix}piece_mean": self.piece_mean_,
            f"{prefix}piece_spread": self.piece_spread_,
            f"{prefix}segment_frames": np.asarray(self.segment_frames_),
            f"{prefix}n_clips": np.asarray(self.n_clips_),
        }
        for block, dist in self.distances_.items():
            arrays.update(dist.to_arrays(f"{prefix}{block}_"))
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], recipe: Recipe, *, sr: int, hop_length: int, prefix: str = "ref_"
    ) -> Reference:
        self = cls(recipe, sr=sr, hop_length=hop_length)
        self.block_scales_ = np.asarray(arrays[f"{prefix}block_scales"], dtype=np.float64)
        self.normal_scores_ = np.asarray(arrays[f"{prefix}normal_scores"], dtype=np.float64)
        weights = arrays.get(f"{prefix}block_weights")
        self.block_weights_ = (
            np.full(len(recipe.blocks), 1.0 / len(recipe.blocks)) if weights is None else np.asarray(weights, np.float64)
        )
        self.spectrum_mean_ = np.asarray(arrays[f"{prefix}spectrum_mean"], dtype=np.float64)
        self.spectrum_low_ = np.asarray(arrays[f"{prefix}spectrum_low"], dtype=np.float64)
        self.spectrum_high_ = np.asarray(arrays[f"{prefix}spectrum_high"], dtype=np.float64)
        self.frame_spread_ = np.asarray(arrays[f"{prefix}frame_spread"], dtype=np.float64)
        # Files written before the one-second pieces hold neither (the pictures fall back to frames).
        piece_mean, piece_spread = arrays.get(f"{prefix}piece_mean"), arrays.get(f"{prefix}piece_spread")
        self.piece_mean_ = None if piece_mean is None else np.asarray(piece_mean, dtype=np.float64)
        self.piece_spread_ = None if piece_spread is None else np.asarray(piece_spread, dtype=np.float64)
        self.segment_frames_ = int(arrays[f"{prefix}segment_frames"])
        self.n_clips_ = int(arrays[f"{prefix}n_clips"])
        self.distances_ = {
            b: BlockDistance.from_arrays(arrays, f"{prefix}{b}_", recipe.distance) for b in recipe.blocks
        }
        if len(self.block_scales_) != len(recipe.blocks) or len(self.block_weights_) != len(recipe.blocks):
            raise ValueError("the reference's arrays do not match its recipe")
        return self


def piece_starts(n_frames: int, piece_frames: int) -> list[int]:
    """First frame of each piece of ``piece_frames``; a tail shorter than half a piece joins the piece
    before it (a tenth of a second is no level)."""
    edges = list(range(0, max(n_frames, 1), piece_frames))
    if len(edges) > 1 and n_frames - edges[-1] < piece_frames / 2:
        edges.pop()
    return edges


def _piece_means(spec_db: np.ndarray, piece_frames: int) -> np.ndarray:
    """Mean of each band over the pieces of ``piece_starts``."""
    db = np.asarray(spec_db, dtype=np.float64)
    edges = piece_starts(db.shape[1], piece_frames)
    bounds = [*edges[1:], db.shape[1]]
    return np.stack([db[:, a:b].mean(axis=1) for a, b in zip(edges, bounds, strict=True)])
