"""The detector: one object that owns the bundle and turns recordings into decisions.

file -> waveform -> log-mel -> normalised windows -> embeddings -> window scores -> clip score (max over
windows) -> label, percentile and, on request, an anomaly map. ``Analysis`` carries the outcome to
whoever prints or draws it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from anomaly.bundle import Bundle, Calibration, load_calibration
from anomaly.calibration import (  # noqa: F401 - MIN/ROUGH and cross_fitted_scores are part of this module's API
    MIN_CALIBRATION_CLIPS,
    ROUGH_CALIBRATION_CLIPS,
    check_clip_count,
    cross_fitted_scores,
    fit_reference_calibration,
    fit_window_calibration,
)
from anomaly.config import find_bundle
from anomaly.dcase import parse_name
from anomaly.embedding import (
    CALIBRATION_RECIPE,
    check_recipe,
    standardize,
    window_features,
)
from anomaly.errors import AudioInputError
from anomaly.familiarity import ADVICE_CALIBRATION, ADVICE_MODEL, Familiarity
from anomaly.features import (
    BAND_DROP_DB,
    EMPTY_BAND_DB,
    LEVEL_TOLERANCE_DB,
    MIN_BAND_HZ,
    REFERENCE_BAND_DROP_DB,
    FeatureParams,
    fill_top_bands,
    image_to_log_mel,
    level_offset,
    load_audio,
    log_mel,
    min_seconds,
    missing_top_bands,
    padding_note,
    window_starts,
    windows,
)
from anomaly.reference import Recipe, Reference
from anomaly.scoring import Thresholds, percentile
from anomaly.sound import Sound, mel_blocks

log = logging.getLogger("anomaly")

# analyze_many embeds about this many windows per pass: large enough for the network's throughput
# (CompiledEncoder runs 64 at a time), small enough to hold two or three 120 s files.
BATCH_WINDOWS = 256


@dataclass
class Analysis:
    """The outcome of scoring one recording."""

    file: str
    score: float
    label: str
    percentile: float
    thresholds: Thresholds
    window_scores: np.ndarray
    window_times_s: np.ndarray
    model: dict
    log_mel: np.ndarray | None = field(default=None, repr=False)
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    duration_s: float = 0.0
    elapsed_ms: float = 0.0
    familiar: bool = True
    advice: str | None = None
    notes: list[str] = field(default_factory=list)
    departures: list[dict] = field(default_factory=list)
    compared_with: str = ""
    # Length of each scored piece (a model window, or a segment of the user's reference), in seconds.
    window_seconds: float = 0.0
    # With ``explain``: the recording as scored (log-mel and waveform), to score it again against another
    # calibration without decoding it again.
    sound: Sound | None = field(default=None, repr=False)
    # Set when the calibration rests on too few recordings to trust a NORMAL (also one of ``notes``).
    caution: str | None = None

    def to_json(self) -> dict:
        """The CLI's and the API's plain-JSON view."""
        out = {
            "file": self.file,
            "score": round(float(self.score), 4),
            "label": self.label,
            "familiar": bool(self.familiar),
        }
        if not self.familiar:
            out["advice"] = self.advice
        return out | {
            "compared_with": self.compared_with,
            "percentile": round(float(self.percentile), 2),
            "thresholds": {
                "maintenance": round(self.thresholds.maintenance, 4),
                "severe": round(self.thresholds.severe, 4),
            },
            "windows": [
                {"start_s": round(float(t), 3), "score": round(float(s), 4)}
                for t, s in zip(self.window_times_s, self.window_scores, strict=True)
            ],
            "model": dict(self.model),
            "departures": list(self.departures),
            "notes": list(self.notes),
        }


def readable_time(iso: str | None) -> str:
    """``2026-11-30T22:58:31+00:00`` as ``2026-11-30 22:58 UTC``; anything else as it is."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso or "at an unknown time")
    if when.utcoffset() == dt.timedelta(0):
        return when.strftime("%Y-%m-%d %H:%M UTC")
    return when.strftime("%Y-%m-%d %H:%M %z").strip()


class Detector:
    """Loads a bundle once and scores recordings, images or batches with it.

    Parameters
    ----------
    bundle : a verified ``Bundle``.
    calibration : optional user calibration that replaces the bundle's scorer and thresholds (and, when it
        carries them, its embedding recipe and standardiser).
    thresholds : optional thresholds set by hand (take precedence over both).
    """

    def __init__(
        self,
        bundle: Bundle,
        calibration: Calibration | None = None,
        thresholds: Thresholds | None = None,
    ):
        from anomaly.model import CompiledEncoder

        self.bundle = bundle
        self.params: FeatureParams = bundle.params
        self.calibration = calibration
        encoder, decoder = bundle.models()
        self._net = CompiledEncoder(encoder, decoder)
        self._norm_mean = bundle.arrays["norm_mean"].astype(np.float32)[:, None]
        self._norm_std = bundle.arrays["norm_std"].astype(np.float32)[:, None]
        self._recon_mean = bundle.arrays.get("recon_error_mean")
        self._recon_std = bundle.arrays.get("recon_error_std")
        self._use(calibration)
        self.thresholds = thresholds or self.thresholds

    def _use(self, calibration: Calibration | None) -> None:
        """Make ``calibration`` (or, with None, the bundle's own) the active scorer, recipe, standardiser,
        reference, familiarity check and thresholds."""
        self.calibration = calibration
        self.reference: Reference | None = None
        if calibration is None:
            self.scorer = self.bundle.scorer
            self.normal_scores = self.bundle.arrays["calibration_scores"]
            self.thresholds = self.bundle.thresholds
            self.recipe = check_recipe(self.bundle.config["embedding"]["recipe"])
            self._standardizer = self.bundle.arrays
            self.familiarity = Familiarity.from_arrays(self.bundle.arrays)
        elif calibration.reference is not None:
            self.reference = calibration.reference
            self.scorer = None
            self.normal_scores = calibration.normal_scores
            self.thresholds = calibration.thresholds
            self.recipe = check_recipe(self.bundle.config["embedding"]["recipe"])
            self._standardizer = self.bundle.arrays
            self.familiarity = calibration.familiarity
        else:
            self.scorer = calibration.scorer
            self.normal_scores = calibration.normal_scores
            self.thresholds = calibration.thresholds
            # A calibration that names no recipe was fitted on the bundle's.
            recipe = calibration.meta.get("recipe") or self.bundle.config["embedding"]["recipe"]
            self.recipe = check_recipe(recipe)
            self._standardizer = calibration.standardizer or self.bundle.arrays
            self.familiarity = None

    @property
    def compared_with(self) -> str:
        """What a score is measured against, in words a maintenance engineer reads."""
        if self.calibration is None:
            training = self.bundle.config.get("training", {})
            if training.get("synthetic"):
                return "the synthetic demo gearbox the model was trained on"
            return f"the normal recordings the model was trained on ({training.get('data', 'its training data')})"
        created = readable_time(self.calibration.meta.get("created"))
        name = self.calibration.meta.get("name")
        what = f"{name}: " if name else ""
        return f"{what}your machine ({self.calibration.n_clips} normal recordings, calibrated {created})"

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path | None = None,
        *,
        calibration: str | Path | None = None,
        maintenance: float | None = None,
        severe: float | None = None,
    ) -> Detector:
        """Load a bundle: ``bundle_dir`` (or env ``ANOMALY_BUNDLE``) if given, else the Hub repo named by
        ``ANOMALY_HUB_REPO``, else the bundled ``artifacts/``."""
        bundle = find_bundle(bundle_dir)
        cal = load_calibration(calibration, bundle) if calibration else None
        detector = cls(bundle, cal)
        return detector.with_thresholds(maintenance, severe)

    def with_thresholds(self, maintenance: float | None = None, severe: float | None = None) -> Detector:
        """A detector that shares this one's model but uses thresholds set by hand."""
        if maintenance is None and severe is None:
            return self
        clone = object.__new__(Detector)
        clone.__dict__.update(self.__dict__)
        clone.thresholds = self.thresholds.override(maintenance, severe)
        return clone

    def with_calibration(self, calibration: Calibration | None) -> Detector:
        """A detector that shares this one's model but uses a user calibration."""
        clone = object.__new__(Detector)
        clone.__dict__.update(self.__dict__)
        clone._use(calibration)
        return clone

    def load_calibration(self, path: str | Path) -> Calibration:
        return load_calibration(path, self.bundle)

    @property
    def model_info(self) -> dict:
        info = {
            "source": self.bundle.source,
            "revision": self.bundle.revision,
            "repo_id": self.bundle.repo_id,
            "calibration": None,
        }
        if self.bundle.reason:
            # Which model answered and why (e.g. the Hub was unreachable and the bundled one is used).
            info["message"] = self.bundle.reason
        if self.calibration is not None:
            info["calibration"] = {
                "n_clips": self.calibration.n_clips,
                "created": self.calibration.meta.get("created"),
                "name": self.calibration.meta.get("name"),
                "method": self.calibration.meta.get("method", "window recipe"),
                "recipe": (
                    self.calibration.meta["reference_recipe"]
                    if self.reference is not None
                    else list(self.recipe)
                ),
                "thresholds_rest_on": f"{self.calibration.n_clips} normal recordings",
            }
        return info

    # --- the pipeline, step by step -------------------------------------------------------------------

    def sound_of(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        max_seconds: float | None = None,
        keep_wave: bool = True,
    ) -> Sound:
        """File (or bytes) -> log-mel in dB and (``keep_wave``) the waveform, with every input check: the
        one decode every path takes (``anomaly.features``). What reading found (a file cut short) travels
        as ``Sound.read_notes``.

        A file too big for this process's memory (possible only without ``max_seconds``) is refused like
        any other unusable file, so that a batch goes on with the next one."""
        p = self.params
        label = name or (Path(source).name if not isinstance(source, bytes) else "upload")
        notes: list[str] = []
        try:
            y = load_audio(source, p.sr, name=name, min_seconds=min_seconds(p), max_seconds=max_seconds, notes=notes)
            return Sound(log_mel(y, p), p.sr, p.hop_length, y if keep_wave else None, tuple(notes))
        except MemoryError:
            raise AudioInputError(label, "the recording is too big to decode in this process's memory") from None

    def log_mel_of(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        max_seconds: float | None = None,
        notes: list[str] | None = None,
    ) -> np.ndarray:
        """File (or bytes) -> log-mel in dB, with every input check (``notes``: what the answer should say
        about reading the file, see ``load_audio``)."""
        sound = self.sound_of(source, name=name, max_seconds=max_seconds, keep_wave=False)
        if notes is not None:
            notes.extend(sound.read_notes)
        return sound.log_mel

    def as_sound(self, spec_db: np.ndarray, wave: np.ndarray | None = None, notes: Sequence[str] = ()) -> Sound:
        """A log-mel (and, when there is one, the waveform it came from) as a ``Sound``; ``notes``: what the
        answer should say about reading it."""
        return Sound(np.asarray(spec_db), self.params.sr, self.params.hop_length, wave, tuple(notes))

    @property
    def needs_wave(self) -> bool:
        """Whether the active scorer listens to more than the log-mel (a reference with fine, lines or timing
        blocks): otherwise a decoded waveform is dropped as soon as its log-mel is made."""
        return self.reference is not None and self.reference.recipe.needs_wave

    def model_input(self, windows_db: np.ndarray) -> np.ndarray:
        """Log-mel windows in dB -> the encoder's normalised input."""
        return (windows_db - self._norm_mean) / self._norm_std

    def window_features(
        self, windows_db: np.ndarray, recipe: Sequence[str] | None = None, *, reconstruct: bool = False
    ):
        """Windows in dB -> the recipe's raw (not yet standardised) features, running only the parts of
        the network the recipe needs; with ``reconstruct`` also the normalised input and its
        reconstruction. ``recipe`` defaults to the active one (the calibration's, else the bundle's)."""
        recipe = self.recipe if recipe is None else check_recipe(recipe)
        x = self.model_input(windows_db)
        if reconstruct:
            raw, recon = window_features(self._net, recipe, windows_db, x, reconstruct=True)
            return raw, x, recon
        return window_features(self._net, recipe, windows_db, x)

    def encode(self, model_input: np.ndarray) -> np.ndarray:
        """The encoder's pooled embedding of normalised windows (``model_input``)."""
        return self._net.embed(model_input)

    def embed_windows(self, windows_db: np.ndarray, *, reconstruct: bool = False):
        """Windows ``(n, n_mels, frames)`` in dB -> standardised embeddings ``(n, dim)`` (and, with
        ``reconstruct``, the normalised input and its reconstruction for the anomaly map)."""
        if reconstruct:
            raw, x, recon = self.window_features(windows_db, reconstruct=True)
            return standardize(raw, self._standardizer), x, recon
        # A few groups at a time: an hour-long recording's 3,500 windows would otherwise hold their
        # normalised copy and every layer's activations at once (each window is embedded on its own).
        step = 4 * BATCH_WINDOWS
        raw = [self.window_features(windows_db[at : at + step]) for at in range(0, len(windows_db), step)]
        return standardize(np.concatenate(raw) if len(raw) > 1 else raw[0], self._standardizer)

    def window_scores(self, embeddings: np.ndarray) -> np.ndarray:
        return self.scorer.score_samples(embeddings)

    def decide(self, score: float) -> tuple[str, float]:
        return self.thresholds.label(score), percentile(score, self.normal_scores)

    # --- whole analyses -------------------------------------------------------------------------------

    def analyze(
        self,
        source: str | Path | bytes,
        *,
        name: str | None = None,
        explain: bool = False,
        max_seconds: float | None = None,
    ) -> Analysis:
        """Score one recording. ``explain`` adds the log-mel and the anomaly map for drawing."""
        started = time.perf_counter()
        label = name or (Path(source).name if not isinstance(source, bytes) else "upload")
        sound = self.sound_of(source, name=label, max_seconds=max_seconds, keep_wave=explain or self.needs_wave)
        return self.analyze_sound(sound, name=label, explain=explain, started=started)

    def analyze_image(
        self, image: object, *, name: str = "image", explain: bool = False, max_seconds: float | None = None
    ) -> Analysis:
        """Score a spectrogram image (see ``anomaly.features`` for the convention); with ``max_seconds``,
        images wider than a recording that long are refused before their pixels are decoded."""
        started = time.perf_counter()
        spec = image_to_log_mel(image, self.params, name=name, max_seconds=max_seconds)
        return self.analyze_log_mel(spec, name=name, explain=explain, started=started)

    def analyze_log_mel(
        self,
        spec_db: np.ndarray,
        *,
        name: str,
        explain: bool = False,
        started: float | None = None,
        notes: Sequence[str] = (),
    ) -> Analysis:
        """Score a log-mel with no waveform (a spectrogram image): see ``analyze_sound``; ``notes`` open the
        answer's notes."""
        return self.analyze_sound(self.as_sound(spec_db, notes=notes), name=name, explain=explain, started=started)

    def analyze_sound(
        self, sound: Sound, *, name: str, explain: bool = False, started: float | None = None
    ) -> Analysis:
        """Band check, then the bundled model's windows or the user's reference, then the decision. What
        reading the file found (``Sound.read_notes``: a file cut short) opens the answer's notes."""
        started = time.perf_counter() if started is None else started
        spec_db = sound.log_mel
        heard, band_notes, n_shared = self.shared_bands(spec_db, name=name)
        notes = [*sound.read_notes, *band_notes]
        if self.reference is not None:
            scored = self._reference_scores(sound.with_log_mel(heard), n_shared, explain)
            if self.needs_wave and not sound.has_wave:
                notes.append(
                    "Scored from the spectrogram picture alone: the checks of fine frequency lines and of "
                    "rhythm need the recording itself."
                )
            return self._analysis(name, spec_db, *scored, explain, started, notes=notes, heard=heard, sound=sound)
        w = self.model_windows(heard, n_shared, name=name)
        anomaly_map = None
        if explain:
            emb, x, recon = self.embed_windows(w, reconstruct=True)
            anomaly_map = self._anomaly_map(x, recon, spec_db.shape[1])
        else:
            emb = self.embed_windows(w)
        starts = window_starts(spec_db.shape[1], self.params)
        return self._analysis(
            name,
            spec_db,
            self.window_scores(emb),
            starts,
            anomaly_map,
            explain,
            started,
            notes=notes,
            heard=heard,
            sound=sound,
        )

    def shared_bands(self, spec_db: np.ndarray, *, name: str = "audio") -> tuple[np.ndarray, list[str], int]:
        """The log-mel to score, on the bands the recording and the reference share, what the answer says
        about the rest, and how many bands (from the bottom) are shared.

        A lossy codec's low-pass, a low sample rate or an upsampling filter leaves the top bands empty; they
        are then filled with the reference's normal level (``fill_top_bands``), so that what the recording
        never carried is not scored as a fault. Below ``MIN_BAND_HZ`` too little is left: refused.
        """
        if self.reference is not None:
            # A real machine's own sound can lose a few dB at the top (a change of state): against a
            # user's reference only a codec-sized cliff counts as missing bands.
            profile = self.reference.spectrum_mean_
            level = mel_blocks(spec_db, ("pmean",))["pmean"]
            drop_db = REFERENCE_BAND_DROP_DB
        else:
            profile = self._norm_mean[:, 0]
            level = spec_db.mean(axis=1)
            drop_db = BAND_DROP_DB
        missing = missing_top_bands(level, profile, drop_db=drop_db)
        notes: list[str] = []
        heard = spec_db
        bands = self.band_hz
        if missing and bands[len(bands) - missing - 1] < MIN_BAND_HZ:
            # Refuse only a band that is really empty (a low sample rate: 60 dB and more down); a quieter
            # top half is the recording's own sound, scored as it is.
            first = len(level) - missing
            deviation = level - profile
            if np.median(deviation[first:]) > np.median(deviation[max(0, first - 8) : first]) - EMPTY_BAND_DB:
                missing = 0
        if missing:
            heard_hz = float(bands[len(bands) - missing - 1])
            top_hz = (self.params.fmax or self.params.sr / 2) / 1000
            if heard_hz < MIN_BAND_HZ:
                raise AudioInputError(
                    name,
                    f"the recording carries sound only up to about {heard_hz / 1000:.1f} kHz (a low sample "
                    f"rate or a lossy codec); the model listens up to {top_hz:.1f} kHz and needs sound up to "
                    f"at least {MIN_BAND_HZ / 1000:.1f} kHz: record at 16 kHz or more, or upload WAV or FLAC",
                )
            notes.append(
                f"This recording carries sound up to about {heard_hz / 1000:.1f} kHz (a lossy codec or a low "
                f"sample rate); the {missing} band(s) above it, up to {top_hz:.1f} kHz, were not heard and "
                "count as normal."
            )
            heard = fill_top_bands(spec_db, missing, profile)
        return heard, notes, len(level) - missing

    def model_windows(
        self, heard: np.ndarray, n_shared: int, *, name: str = "audio", cut: np.ndarray | None = None
    ) -> np.ndarray:
        """The bundled model's windows of a log-mel; when bands were missing (a codec or a resampler was at
        work), each window is brought back to normal level when it is up to ``LEVEL_TOLERANCE_DB`` quieter
        than the nearest training domain. ``cut``: the windows of ``heard`` if already cut.

        The model reads a few tenths of a dB of gain as a change of the machine (its normal sounds vary that
        little): an MP3 encoder's -0.4 dB raised a normal score by half. Lossy codecs and filters take energy
        away, faults add it; so a small loss is evened out and a gain is kept. Window by window, so that a
        short event moves only the windows it is in.
        """
        if n_shared >= self.params.n_mels and cut is not None:
            return cut  # the windows already cut from this very log-mel
        w = windows(heard, self.params, name=name)
        if n_shared >= self.params.n_mels:
            # No sign of a codec or a resampler: the level is the recording's own (the synthetic gearbox's
            # level follows its load, and evening it out there raised false alarms from 38 to 53 of 240).
            return w
        profiles = self.familiarity.mean_ if self.familiarity is not None else self._norm_mean[:, 0]
        out = w
        for i in range(len(w)):
            offset = level_offset(w[i].mean(axis=1), profiles, n_shared)
            if -LEVEL_TOLERANCE_DB <= offset < 0.0:
                if out is w:
                    out = w.copy()
                out[i] -= np.float32(offset)
        return out

    def _reference_scores(self, heard: Sound, n_shared: int, explain: bool):
        """Segment scores, first frames and (with ``explain``) the map, against the user's reference.
        Above the bands the recording shares with it (``n_shared``), fine and rhythm details count as
        normal."""
        heard_hz = float(self.band_hz[n_shared - 1]) if n_shared < self.params.n_mels else None
        scores, starts = self.reference.segment_scores(heard, heard_hz=heard_hz)
        return scores, starts, (self.reference.anomaly_map(heard.log_mel) if explain else None)

    @cached_property
    def band_hz(self) -> np.ndarray:
        """Centre frequency of each mel band (Hz); computed once (every analysis checks its bands)."""
        import librosa

        p = self.params
        return librosa.mel_frequencies(p.n_mels + 2, fmin=p.fmin, fmax=p.fmax or p.sr / 2)[1:-1]

    def _analysis(
        self, name, spec_db, scores, starts, anomaly_map, explain, started, *, notes=(), heard=None, sound=None
    ) -> Analysis:
        """``spec_db`` is the recording's log-mel (what is drawn), ``heard`` the one scored (see
        ``shared_bands``; the same when no band was missing)."""
        heard = spec_db if heard is None else heard
        score = float(scores.max())
        label, pct = self.decide(score)
        notes = list(notes)
        if self.reference is None and (note := padding_note(spec_db.shape[1], self.params)):
            notes.append(note)
        caution = self.reference.caution if self.reference is not None else None
        if caution:
            notes.append(caution)
        # Against the bundled model a score far beyond severe also speaks of another machine; against the
        # user's own normals it is a fault of that machine, so only the envelope counts there.
        ratio = score / self.thresholds.severe if self.calibration is None else 0.0
        familiar = self.familiarity is None or self.familiarity.is_familiar(heard, ratio)
        advice = None
        if not familiar:
            advice = ADVICE_MODEL if self.calibration is None else ADVICE_CALIBRATION
        departures = self.reference.departures(heard, self.band_hz) if self.reference is not None else []
        return Analysis(
            file=name,
            score=score,
            label=label,
            percentile=pct,
            thresholds=self.thresholds,
            window_scores=scores,
            window_times_s=np.asarray(starts) * self.params.frame_seconds,
            model=self.model_info,
            log_mel=spec_db if explain else None,
            anomaly_map=anomaly_map,
            duration_s=spec_db.shape[1] * self.params.frame_seconds,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            familiar=familiar,
            advice=advice,
            notes=notes,
            departures=departures,
            compared_with=self.compared_with,
            window_seconds=self.piece_seconds(spec_db.shape[1]),
            sound=sound if explain else None,
            caution=caution,
        )

    def piece_seconds(self, n_frames: int) -> float:
        """How long each scored piece of a recording of ``n_frames`` is: a model window, or a segment of
        the active reference (a whole clip when it is not longer than one)."""
        fs = self.params.frame_seconds
        if self.reference is None:
            return self.params.window_seconds
        return min(self.reference.segment_frames_, n_frames) * fs

    def _anomaly_map(self, x: np.ndarray, recon: np.ndarray, n_frames: int) -> np.ndarray:
        """Reconstruction error per time-frequency cell, in standard deviations above normal.

        Overlapping windows are averaged; cells that reconstruct no worse than on normal clips are 0.
        """
        err = np.square(x - recon)
        total = np.zeros((self.params.n_mels, n_frames), np.float32)
        count = np.zeros((1, n_frames), np.float32)
        for i, start in enumerate(window_starts(n_frames, self.params)):
            width = min(self.params.window_frames, n_frames - start)  # a short clip fills part of one
            total[:, start : start + width] += err[i][:, :width]
            count[:, start : start + width] += 1
        err = total / np.maximum(count, 1)
        if self._recon_mean is not None and self._recon_std is not None:
            err = (err - self._recon_mean[:, None]) / self._recon_std[:, None]
        return np.maximum(err, 0.0).astype(np.float32)

    # --- batches ------------------------------------------------------------------------------------

    def iter_windows(
        self,
        files: Sequence[str | Path],
        *,
        max_seconds: float | None = None,
        workers: int | None = None,
        keep_wave: bool = True,
    ) -> Iterator[tuple[int, Sound | None, np.ndarray | None, AudioInputError | None]]:
        """``(index, sound, windows, error)`` of each file in order; a bad file yields its error. Without
        ``keep_wave`` the sounds hold their log-mel only (the bundled model's path needs no more).

        Files are decoded and turned into log-mels by ``workers`` threads (default: one per CPU, at most
        4; libsndfile, FFmpeg, the FFT and numpy release the GIL), at most ``workers`` files ahead of the
        one handed out: memory holds a few files at a time, not the whole list.
        """

        def prepare(f: str | Path) -> tuple[Sound, np.ndarray] | AudioInputError:
            try:
                sound = self.sound_of(f, name=Path(f).name, max_seconds=max_seconds, keep_wave=keep_wave)
                return sound, windows(sound.log_mel, self.params, name=Path(f).name)
            except AudioInputError as exc:
                return exc

        workers = max(1, min(len(files), workers or min(4, os.cpu_count() or 1)))
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
            ahead = deque(pool.submit(prepare, f) for f in files[:workers])
            for i in range(len(files)):
                outcome = ahead.popleft().result()
                if i + workers < len(files):
                    ahead.append(pool.submit(prepare, files[i + workers]))
                if isinstance(outcome, AudioInputError):
                    yield i, None, None, outcome
                else:
                    yield i, outcome[0], outcome[1], None

    def window_files(
        self,
        files: Sequence[str | Path],
        *,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
        workers: int | None = None,
    ) -> tuple[list[Sound | None], list[np.ndarray | None], dict[int, AudioInputError]]:
        """Sounds and model windows of many files (``iter_windows``, kept); bad files are reported, not
        raised. Returns per-file sounds and windows (None for failed files) and ``{index: error}``.
        """
        sounds: list[Sound | None] = []
        clip_windows: list[np.ndarray | None] = []
        errors: dict[int, AudioInputError] = {}
        for i, sound, clip, error in self.iter_windows(files, max_seconds=max_seconds, workers=workers):
            if error is not None:
                errors[i] = error
            sounds.append(sound)
            clip_windows.append(clip)
            if progress:
                progress(i + 1, len(files))
        return sounds, clip_windows, errors

    def analyze_many(
        self,
        files: Sequence[str | Path],
        *,
        names: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
        workers: int | None = None,
    ) -> list[Analysis | AudioInputError]:
        """Score many files; a bad file yields its error in its place.

        Files stream through: decoded a few ahead (``iter_windows``, by ``workers`` threads), their windows
        embedded in groups of about ``BATCH_WINDOWS`` (the network's throughput), scored, and dropped, so
        that 100 files of 120 s cost the memory of a few, not of all of them. This is the one path by which
        the Batch tab, ``predict`` and ``score-archive`` (``anomaly.archive``) score files.
        """
        started = time.perf_counter()
        results: list[Analysis | AudioInputError | None] = [None] * len(files)
        group: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, list[str]]] = []

        def name_of(i: int) -> str:
            return names[i] if names else Path(files[i]).name

        def score_group() -> None:
            flat = self.embed_windows(np.concatenate([g[3] for g in group]))
            parts = np.split(flat, np.cumsum([len(g[3]) for g in group])[:-1])
            for (i, spec, heard, _, notes), emb in zip(group, parts, strict=True):
                starts = window_starts(spec.shape[1], self.params)
                results[i] = self._analysis(
                    name_of(i),
                    spec,
                    self.window_scores(emb),
                    starts,
                    None,
                    False,
                    started,
                    notes=notes,
                    heard=heard,
                )
            group.clear()

        for i, sound, clip, error in self.iter_windows(
            files, max_seconds=max_seconds, workers=workers, keep_wave=self.needs_wave
        ):
            try:
                if error is not None:
                    raise error
                if self.reference is not None:  # the user's reference: no network pass, nothing to group
                    results[i] = self.analyze_sound(sound, name=name_of(i), started=started)
                else:
                    heard, band_notes, n_shared = self.shared_bands(sound.log_mel, name=name_of(i))
                    notes = [*sound.read_notes, *band_notes]
                    clip = self.model_windows(heard, n_shared, name=name_of(i), cut=clip)
                    group.append((i, sound.log_mel, heard, clip, notes))
                    if sum(len(g[3]) for g in group) >= BATCH_WINDOWS:
                        score_group()
            except AudioInputError as exc:
                results[i] = AudioInputError(name_of(i), exc.problem)
            if progress:
                progress(i + 1, len(files))
        if group:
            score_group()
        return results  # type: ignore[return-value] - every slot is filled

    # --- adapting to a user's machine ---------------------------------------------------------------

    def calibrate(
        self,
        files: Sequence[str | Path],
        *,
        domains: Iterable[str] | None = None,
        recipe: Sequence[str] | None = None,
        reference_recipe: Recipe | None = None,
        refit_standardizer: bool = True,
        n_components: int | None = None,
        folds: int = 5,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
        name: str | None = None,
    ) -> Calibration:
        """Fit what "normal" means on a user's normal clips.

        By default this fits a ``Reference`` (``anomaly.reference``: clip-level spectral blocks, one
        distance per block, thresholds from leave-one-out scores), the method chosen on real machines.
        With a window ``recipe`` (or ``refit_standardizer=False``) it refits the model's window scorer
        instead (calibration format 2): standardiser, PCA scorer and thresholds from k-fold held-out
        scores, with domains from DCASE names (source/target) or all ``"user"``.
        """
        sounds, clip_windows, errors = self.window_files(files, progress=progress, max_seconds=max_seconds)
        for i, err in errors.items():
            log.warning("skipping %s: %s", Path(files[i]).name, err.problem)
        kept = [i for i, w in enumerate(clip_windows) if w is not None]
        skipped = [str(Path(files[i]).name) for i in sorted(errors)]
        if recipe is None and refit_standardizer:
            calibration = self.calibrate_specs(
                [sounds[i] for i in kept], recipe=reference_recipe, skipped=skipped, name=name
            )
        else:
            domain_list = list(domains) if domains is not None else [_domain_of(f) for f in files]
            calibration = self.calibrate_windows(
                [clip_windows[i] for i in kept],
                [domain_list[i] for i in kept],
                recipe=recipe,
                refit_standardizer=refit_standardizer,
                n_components=n_components,
                folds=folds,
                skipped=skipped,
            ).named(name)
        if calibration.meta["rough"]:
            log.warning(
                "calibrated on only %d normal clips: the thresholds are wide; "
                "%d or more clips give tighter ones",
                calibration.n_clips,
                ROUGH_CALIBRATION_CLIPS,
            )
        return calibration

    def calibrate_specs(
        self,
        clips: Sequence[Sound | np.ndarray],
        *,
        recipe: Recipe | None = None,
        skipped: Sequence[str] = (),
        name: str | None = None,
    ) -> Calibration:
        """A reference calibration (format 3) from normal clips: ``Sound``s (or log-mels in dB, then with
        mel blocks only)."""
        return fit_reference_calibration(clips, self.bundle, recipe=recipe, skipped=skipped, name=name)

    def calibrate_windows(
        self,
        clip_windows: Sequence[np.ndarray],
        domains: Sequence[str],
        *,
        recipe: Sequence[str] | None = None,
        refit_standardizer: bool = True,
        n_components: int | None = None,
        folds: int = 5,
        skipped: Sequence[str] = (),
    ) -> Calibration:
        """``calibrate`` with a window recipe, on clips already cut into log-mel windows in dB (one array
        per clip): the network runs here, the fitting in ``anomaly.calibration``."""
        check_clip_count(len(clip_windows))
        recipe = check_recipe(recipe or self.calibration_recipe)
        raw = self.window_features(np.concatenate(clip_windows), recipe)
        clip_raw = np.split(raw, np.cumsum([len(w) for w in clip_windows])[:-1])
        return fit_window_calibration(
            clip_raw,
            domains,
            self.bundle,
            recipe=recipe,
            refit_standardizer=refit_standardizer,
            n_components=n_components,
            folds=folds,
            skipped=skipped,
        )

    @property
    def calibration_recipe(self) -> tuple[str, ...]:
        """The recipe ``calibrate`` fits on unless told otherwise: the bundle's
        ``embedding.calibration_recipe`` if it names one, else ``CALIBRATION_RECIPE``."""
        return check_recipe(self.bundle.config["embedding"].get("calibration_recipe") or CALIBRATION_RECIPE)


def _domain_of(path: str | Path) -> str:
    info = parse_name(path)
    return info.domain if info.split is not None else "user"
