"""The detector: one object that owns the bundle and turns recordings into decisions.

file -> waveform -> log-mel -> band check -> the scorer's pieces and scores (``anomaly.scorers``) -> clip
score (the worst piece) -> decision (label, percentile, familiarity) and, on request, an anomaly map.
``Analysis`` carries the outcome to whoever prints or draws it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from anomaly.analysis import Analysis, compared_with
from anomaly.bands import shared_bands
from anomaly.bundle import Bundle
from anomaly.calibration import (  # noqa: F401 - MIN/ROUGH are part of this module's API
    MIN_CALIBRATION_CLIPS,
    ROUGH_CALIBRATION_CLIPS,
    Calibration,
    fit_calibration,
    load_calibration,
)
from anomaly.dcase import parse_name
from anomaly.decoding import load_audio
from anomaly.errors import AudioInputError
from anomaly.features import FeatureParams, log_mel, min_seconds
from anomaly.images import image_to_log_mel
from anomaly.locate import find_bundle
from anomaly.scorers import Decision, Scored, Scorer, WindowScorer, decide
from anomaly.scoring import Thresholds
from anomaly.sound import Sound

log = logging.getLogger("anomaly")

# analyze_many scores about this much (the scorer's ``cost``: model windows) per pass: large enough for the
# network's throughput (CompiledEncoder runs 64 at a time), small enough to hold two or three 120 s files.
BATCH_COST = 256


@dataclass
class Heard:
    """A decoded recording after the band check, prepared for its scorer (``Detector.hear``)."""

    name: str
    sound: Sound
    heard: np.ndarray
    notes: list[str]
    prepared: object


class Detector:
    """Loads a bundle once and scores recordings, images or batches with it: decode -> features -> scorer ->
    decision. What a score means is the scorer's business (``anomaly.scorers``): the bundle's own window
    scorer, or the one a user calibration holds.

    Parameters
    ----------
    bundle : a verified ``Bundle``.
    calibration : optional user calibration whose scorer and thresholds replace the bundle's.
    thresholds : optional thresholds set by hand (take precedence over both).
    """

    def __init__(
        self,
        bundle: Bundle,
        calibration: Calibration | None = None,
        thresholds: Thresholds | None = None,
    ):
        self.bundle = bundle
        self.params: FeatureParams = bundle.params
        bundle.network()  # loaded (once per bundle) and checked against the config now, not at the first file
        self.calibration = calibration
        self.scorer: Scorer = calibration.scorer if calibration is not None else WindowScorer.of_bundle(bundle)
        self.thresholds: Thresholds = thresholds or self.scorer.thresholds

    @property
    def normal_scores(self) -> np.ndarray:
        return self.scorer.normal_scores

    @property
    def compared_with(self) -> str:
        """What a score is measured against, in words a maintenance engineer reads."""
        return compared_with(self.bundle, self.calibration)

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
        return cls(bundle, cal).with_thresholds(maintenance, severe)

    def with_thresholds(self, maintenance: float | None = None, severe: float | None = None) -> Detector:
        """A detector that shares this one's model but uses thresholds set by hand."""
        if maintenance is None and severe is None:
            return self
        return Detector(self.bundle, self.calibration, self.thresholds.override(maintenance, severe))

    def with_calibration(self, calibration: Calibration | None) -> Detector:
        """A detector that shares this one's model but uses a user calibration (None: the bundle's own)."""
        return Detector(self.bundle, calibration)

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
                **self.scorer.describe(),
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
        """Whether the scorer listens to more than the log-mel: otherwise a decoded waveform is dropped as
        soon as its log-mel is made."""
        return self.scorer.needs_wave

    def hear(self, sound: Sound, *, name: str) -> Heard:
        """The band check (``anomaly.bands``: bands a codec cut count as normal), then the scorer's
        preparation; what reading the file found (``Sound.read_notes``) opens the notes."""
        level, profile, drop_db = self.scorer.band_levels(sound.log_mel)
        heard, band_notes, n_shared = shared_bands(sound.log_mel, level, profile, drop_db, self.params, name=name)
        prepared = self.scorer.prepare(sound.with_log_mel(heard), n_shared, name=name)
        return Heard(name, sound, heard, [*sound.read_notes, *band_notes], prepared)

    def decide(self, score: float, shape: float | None = None) -> Decision:
        """The verdict on a score under this detector's thresholds (``anomaly.scorers.decide``)."""
        return decide(score, self.scorer, self.thresholds, shape)

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
        """Band check, the scorer, then the decision: the path of every single recording."""
        started = time.perf_counter() if started is None else started
        heard = self.hear(sound, name=name)
        (scored,) = self.scorer.score([heard.prepared], explain=explain)
        return self._analysis(heard, scored, explain, started)

    def _analysis(self, heard: Heard, scored: Scored, explain: bool, started: float) -> Analysis:
        spec_db = heard.sound.log_mel
        score = float(scored.scores.max())
        shape = self.scorer.shape(heard.heard)
        decision = self.decide(score, shape)
        caution = self.scorer.caution
        notes = [*heard.notes, *scored.notes, *([caution] if caution else [])]
        fs = self.params.frame_seconds
        return Analysis(
            file=heard.name,
            score=score,
            label=decision.label,
            percentile=decision.percentile,
            thresholds=self.thresholds,
            window_scores=scored.scores,
            window_times_s=np.asarray(scored.starts) * fs,
            model=self.model_info,
            log_mel=spec_db if explain else None,
            anomaly_map=scored.anomaly_map,
            duration_s=spec_db.shape[1] * fs,
            elapsed_ms=(time.perf_counter() - started) * 1000.0,
            familiar=decision.familiar,
            advice=decision.advice,
            notes=notes,
            departures=scored.departures,
            compared_with=self.compared_with,
            window_seconds=self.scorer.piece_seconds(spec_db.shape[1]),
            sound=heard.sound if explain else None,
            caution=caution,
            shape=shape,
        )

    def relabel(self, analysis: Analysis) -> Analysis:
        """The same recording's scores under this detector's thresholds: label, percentile and familiarity
        decided again (familiarity depends on the severe threshold, see ``decide``)."""
        decision = self.decide(analysis.score, analysis.shape)
        return replace(
            analysis,
            label=decision.label,
            percentile=decision.percentile,
            familiar=decision.familiar,
            advice=decision.advice,
            thresholds=self.thresholds,
            model=self.model_info,
        )

    # --- batches ------------------------------------------------------------------------------------

    def iter_heard(
        self,
        files: Sequence[str | Path],
        *,
        names: Sequence[str] | None = None,
        max_seconds: float | None = None,
        workers: int | None = None,
        keep_wave: bool | None = None,
        hear: bool = True,
    ) -> Iterator[tuple[int, Heard | Sound | AudioInputError]]:
        """``(index, outcome)`` of each file in order: its ``Heard`` (with ``hear``; else its ``Sound``) or,
        for a bad file, its error. ``keep_wave`` defaults to what the scorer needs.

        Files are decoded, band-checked and prepared for the scorer by ``workers`` threads (default: one per
        CPU, at most 4; libsndfile, FFmpeg, the FFT and numpy release the GIL), at most ``workers`` files
        ahead of the one handed out: memory holds a few files at a time, not the whole list.
        """
        keep_wave = self.needs_wave if keep_wave is None else keep_wave

        def prepare(i: int) -> Heard | Sound | AudioInputError:
            name = names[i] if names else Path(files[i]).name
            try:
                sound = self.sound_of(files[i], name=name, max_seconds=max_seconds, keep_wave=keep_wave)
                return self.hear(sound, name=name) if hear else sound
            except AudioInputError as exc:
                return AudioInputError(name, exc.problem)

        workers = max(1, min(len(files), workers or min(4, os.cpu_count() or 1)))
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
            ahead = deque(pool.submit(prepare, i) for i in range(min(workers, len(files))))
            for i in range(len(files)):
                outcome = ahead.popleft().result()
                if i + workers < len(files):
                    ahead.append(pool.submit(prepare, i + workers))
                yield i, outcome

    def decode_files(
        self,
        files: Sequence[str | Path],
        *,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
        workers: int | None = None,
    ) -> tuple[list[Sound | None], dict[int, AudioInputError]]:
        """The ``Sound`` (log-mel and waveform) of many files, None for a bad one, and ``{index: error}``."""
        sounds: list[Sound | None] = []
        errors: dict[int, AudioInputError] = {}
        for i, outcome in self.iter_heard(
            files, max_seconds=max_seconds, workers=workers, keep_wave=True, hear=False
        ):
            if isinstance(outcome, AudioInputError):
                errors[i] = outcome
                outcome = None
            sounds.append(outcome)
            if progress:
                progress(i + 1, len(files))
        return sounds, errors

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

        Files stream through: decoded and prepared a few ahead (``iter_heard``), scored in groups of about
        ``BATCH_COST`` (the scorer's ``cost``: model windows, so that the network runs at its throughput),
        and dropped, so that 100 files of 120 s cost the memory of a few. This is the one path by which the
        Batch tab, ``predict`` and ``score-archive`` (``anomaly.archive``) score files.
        """
        started = time.perf_counter()
        results: list[Analysis | AudioInputError | None] = [None] * len(files)
        group: list[tuple[int, Heard]] = []

        def score_group() -> None:
            scored = self.scorer.score([h.prepared for _, h in group])
            for (i, heard), one in zip(group, scored, strict=True):
                results[i] = self._analysis(heard, one, False, started)
            group.clear()

        for i, outcome in self.iter_heard(files, names=names, max_seconds=max_seconds, workers=workers):
            if isinstance(outcome, AudioInputError):
                results[i] = outcome
            else:
                group.append((i, outcome))
                if sum(self.scorer.cost(h.prepared) for _, h in group) >= BATCH_COST:
                    score_group()
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
        method: str = "reference",
        domains: Iterable[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
        name: str | None = None,
        **options,
    ) -> Calibration:
        """Fit what "normal" means on a user's normal clips (``anomaly.calibration.fit_calibration``).

        ``method`` names the scorer (``anomaly.scorers.SCORERS``): by default a ``Reference`` of the clips
        (``anomaly.reference``), the method chosen on real machines; ``"window"`` refits the model's window
        scorer. ``domains`` default to DCASE names' source/target, else ``"user"``; ``options`` go to the
        scorer's ``fit`` (e.g. ``recipe``).
        """
        sounds, errors = self.decode_files(files, progress=progress, max_seconds=max_seconds)
        for i, err in errors.items():
            log.warning("skipping %s: %s", Path(files[i]).name, err.problem)
        kept = [i for i, s in enumerate(sounds) if s is not None]
        domain_list = list(domains) if domains is not None else [_domain_of(f) for f in files]
        calibration = self.fit_calibration(
            [sounds[i] for i in kept],
            method=method,
            domains=[domain_list[i] for i in kept],
            skipped=[str(Path(files[i]).name) for i in sorted(errors)],
            name=name,
            **options,
        )
        if calibration.meta["rough"]:
            log.warning(
                "calibrated on only %d normal clips: the thresholds are wide; %d or more clips give tighter ones",
                calibration.n_clips,
                ROUGH_CALIBRATION_CLIPS,
            )
        return calibration

    def fit_calibration(self, clips: Sequence[Sound | np.ndarray], **options) -> Calibration:
        """``calibrate`` on clips already decoded (``Sound``s, or log-mels for mel-only recipes)."""
        return fit_calibration(self.bundle, clips, **options)


def _domain_of(path: str | Path) -> str:
    info = parse_name(path)
    return info.domain if info.split is not None else "user"
