"""The bundled model's scorer: log-mel windows -> encoder features -> PCA + Mahalanobis per window.

Used with the bundle's own fit (the synthetic gearbox it was trained on) and with window calibrations
(format 1 and 2 files: the scorer, and optionally the standardiser and recipe, refitted on a user's clips).
A clip's score is its worst window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anomaly.bands import BAND_DROP_DB, LEVEL_TOLERANCE_DB, level_offset
from anomaly.embedding import (
    CALIBRATION_RECIPE,
    CALIBRATION_STD_FLOOR,
    check_recipe,
    fit_standardizer,
    standardize,
    window_features,
)
from anomaly.familiarity import ADVICE_CALIBRATION, ADVICE_MODEL, Familiarity
from anomaly.features import padding_note, window_starts, windows
from anomaly.scorers.base import BaseScorer, Scored
from anomaly.scoring import MahalanobisScorer, Thresholds, clip_folds, gamma_thresholds
from anomaly.sound import Sound

# Windows embedded per network pass when a recording is long: an hour-long recording's 3,500 windows would
# otherwise hold their normalised copy and every layer's activations at once.
EMBED_STEP = 1024


@dataclass
class Prepared:
    """A recording's model windows in dB and its length in frames."""

    windows: np.ndarray
    n_frames: int


class WindowScorer(BaseScorer):
    """Window features of the bundle's network, standardised, scored by a ``MahalanobisScorer``."""

    method = "window"

    def __init__(
        self,
        bundle,
        mahalanobis: MahalanobisScorer,
        *,
        recipe: Sequence[str],
        standardizer: dict[str, np.ndarray] | None,
        thresholds: Thresholds,
        normal_scores: np.ndarray,
        familiarity: Familiarity | None = None,
        advice: str = ADVICE_CALIBRATION,
    ):
        super().__init__(thresholds=thresholds, normal_scores=normal_scores, familiarity=familiarity, advice=advice)
        self.bundle = bundle
        self.params = bundle.params
        self.mahalanobis = mahalanobis
        self.recipe = check_recipe(recipe)
        # None: the bundle's standardiser (and so the bundle's recipe).
        self.standardizer = standardizer
        arrays = bundle.arrays
        self._norm_mean = arrays["norm_mean"].astype(np.float32)[:, None]
        self._norm_std = arrays["norm_std"].astype(np.float32)[:, None]
        self._recon_mean = arrays.get("recon_error_mean")
        self._recon_std = arrays.get("recon_error_std")

    @classmethod
    def of_bundle(cls, bundle) -> WindowScorer:
        """The bundle's own scorer, thresholds and familiarity check."""
        return cls(
            bundle,
            bundle.scorer,
            recipe=bundle.config["embedding"]["recipe"],
            standardizer=None,
            thresholds=bundle.thresholds,
            normal_scores=bundle.arrays["calibration_scores"],
            familiarity=Familiarity.from_arrays(bundle.arrays),
            advice=ADVICE_MODEL,
        )

    # --- the network ----------------------------------------------------------------------------------

    @property
    def net(self):
        return self.bundle.network()

    def model_input(self, windows_db: np.ndarray) -> np.ndarray:
        """Log-mel windows in dB -> the encoder's normalised input."""
        return (windows_db - self._norm_mean) / self._norm_std

    def encode(self, model_input: np.ndarray) -> np.ndarray:
        """The encoder's pooled embedding of normalised windows."""
        return self.net.embed(model_input)

    def window_features(self, windows_db: np.ndarray, recipe: Sequence[str] | None = None, *, reconstruct=False):
        """Windows in dB -> the recipe's raw (not yet standardised) features, running only the parts of the
        network the recipe needs; with ``reconstruct`` also the normalised input and its reconstruction."""
        recipe = self.recipe if recipe is None else check_recipe(recipe)
        x = self.model_input(windows_db)
        if reconstruct:
            raw, recon = window_features(self.net, recipe, windows_db, x, reconstruct=True)
            return raw, x, recon
        return window_features(self.net, recipe, windows_db, x)

    def embed_windows(self, windows_db: np.ndarray, *, reconstruct: bool = False):
        """Windows ``(n, n_mels, frames)`` in dB -> standardised embeddings (and, with ``reconstruct``, the
        normalised input and its reconstruction for the anomaly map)."""
        standardizer = self.standardizer or self.bundle.arrays
        if reconstruct:
            raw, x, recon = self.window_features(windows_db, reconstruct=True)
            return standardize(raw, standardizer), x, recon
        raw = [self.window_features(windows_db[at : at + EMBED_STEP]) for at in range(0, len(windows_db), EMBED_STEP)]
        return standardize(np.concatenate(raw) if len(raw) > 1 else raw[0], standardizer)

    # --- the Scorer interface ---------------------------------------------------------------------------

    def band_levels(self, spec_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        return spec_db.mean(axis=1), self._norm_mean[:, 0], BAND_DROP_DB

    def prepare(self, heard: Sound, n_shared: int, *, name: str) -> Prepared:
        """The model's windows. When bands were missing (a codec or a resampler was at work), each window is
        brought back to normal level when it is up to ``LEVEL_TOLERANCE_DB`` quieter than the nearest
        training domain.

        The model reads a few tenths of a dB of gain as a change of the machine (its normal sounds vary that
        little): an MP3 encoder's -0.4 dB raised a normal score by half. Lossy codecs and filters take energy
        away, faults add it; so a small loss is evened out and a gain is kept. Window by window, so that a
        short event moves only the windows it is in. With every band present the level is the recording's
        own (the synthetic gearbox's level follows its load, and evening it out there raised false alarms
        from 38 to 53 of 240).
        """
        w = windows(heard.log_mel, self.params, name=name)
        if n_shared < self.params.n_mels:
            profiles = self.familiarity.mean_ if self.familiarity is not None else self._norm_mean[:, 0]
            offsets = np.array([level_offset(x.mean(axis=1), profiles, n_shared) for x in w])
            shift = np.where((offsets >= -LEVEL_TOLERANCE_DB) & (offsets < 0.0), offsets, 0.0)
            if shift.any():
                w = w - shift[:, None, None].astype(np.float32)
        return Prepared(w, heard.n_frames)

    def cost(self, prepared: Prepared) -> int:
        return len(prepared.windows)

    def score(self, prepared: Sequence[Prepared], *, explain: bool = False) -> list[Scored]:
        """Scores of many recordings' windows, embedded in one pass (the network's throughput)."""
        if explain:
            return [self._explained(p) for p in prepared]
        flat = self.embed_windows(np.concatenate([p.windows for p in prepared]))
        parts = np.split(flat, np.cumsum([len(p.windows) for p in prepared])[:-1])
        return [self._scored(p, self.mahalanobis.score_samples(e)) for p, e in zip(prepared, parts, strict=True)]

    def _scored(self, p: Prepared, scores: np.ndarray, anomaly_map: np.ndarray | None = None) -> Scored:
        note = padding_note(p.n_frames, self.params)
        return Scored(scores, window_starts(p.n_frames, self.params), anomaly_map, (note,) if note else ())

    def _explained(self, p: Prepared) -> Scored:
        emb, x, recon = self.embed_windows(p.windows, reconstruct=True)
        return self._scored(p, self.mahalanobis.score_samples(emb), self._anomaly_map(x, recon, p.n_frames))

    def _anomaly_map(self, x: np.ndarray, recon: np.ndarray, n_frames: int) -> np.ndarray:
        """Reconstruction error per time-frequency cell, in standard deviations above normal.

        Overlapping windows are averaged; cells that reconstruct no worse than on normal clips are 0.
        """
        params = self.params
        err = np.square(x - recon)
        total = np.zeros((params.n_mels, n_frames), np.float32)
        count = np.zeros((1, n_frames), np.float32)
        for i, start in enumerate(window_starts(n_frames, params)):
            width = min(params.window_frames, n_frames - start)  # a short clip fills part of one
            total[:, start : start + width] += err[i][:, :width]
            count[:, start : start + width] += 1
        err = total / np.maximum(count, 1)
        if self._recon_mean is not None and self._recon_std is not None:
            err = (err - self._recon_mean[:, None]) / self._recon_std[:, None]
        return np.maximum(err, 0.0).astype(np.float32)

    def piece_seconds(self, n_frames: int) -> float:
        return self.params.window_seconds

    def describe(self) -> dict:
        return {"method": "window recipe", "recipe": list(self.recipe)}

    # --- calibration files (format 1 and 2) ----------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.mahalanobis.to_arrays() | (self.standardizer or {})

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict, bundle, thresholds: Thresholds) -> WindowScorer:
        """A window calibration's scorer; ``ValueError`` names what does not fit this bundle."""
        standardizer = (
            {k: np.asarray(arrays[k], dtype=np.float64) for k in ("embed_mean", "embed_std")}
            if "embed_mean" in arrays
            else None
        )
        mahalanobis = MahalanobisScorer.from_arrays(arrays)
        try:
            recipe = check_recipe(meta.get("recipe") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the calibration names no valid embedding recipe ({exc})") from None
        if standardizer is None and list(recipe) != list(bundle.config["embedding"]["recipe"]):
            raise ValueError(
                f"this calibration uses the embedding recipe {list(recipe)}, the model uses "
                f"{bundle.config['embedding']['recipe']}; calibrate again"
            )
        if standardizer is None:
            dim = bundle.scorer.components_.shape[1]
        else:
            dim = len(standardizer["embed_mean"])
            if standardizer["embed_std"].shape != (dim,) or not (standardizer["embed_std"] > 0).all():
                raise ValueError("the calibration's standardiser is damaged")
        if mahalanobis.components_.shape[1] != dim:
            raise ValueError("the embedding size does not match this model")
        return cls(
            bundle,
            mahalanobis,
            recipe=recipe,
            standardizer=standardizer,
            thresholds=thresholds,
            normal_scores=np.asarray(arrays["normal_scores"], dtype=np.float64),
        )

    @classmethod
    def fit(
        cls,
        bundle,
        clips: Sequence[Sound],
        *,
        domains: Sequence[str],
        recipe: Sequence[str] | None = None,
        refit_standardizer: bool = True,
        n_components: int | None = None,
        folds: int = 5,
    ) -> tuple[WindowScorer, dict]:
        """Refit the window scorer (and by default the standardiser) on normal clips, with thresholds from
        k-fold held-out clip scores (``cross_fitted_scores``); domains from DCASE names or all ``"user"``.
        With ``refit_standardizer=False`` the bundle's standardiser is kept, which fits only its recipe.
        Returns the scorer and what the calibration file says of it."""
        base = cls.of_bundle(bundle)
        recipe = check_recipe(
            recipe or bundle.config["embedding"].get("calibration_recipe") or CALIBRATION_RECIPE
        )
        if not refit_standardizer and recipe != check_recipe(bundle.config["embedding"]["recipe"]):
            raise ValueError("the model's standardiser fits only the model's recipe; refit it for another")
        clip_windows = [windows(c.log_mel, bundle.params) for c in clips]
        raw = base.window_features(np.concatenate(clip_windows), recipe)
        clip_raw = np.split(raw, np.cumsum([len(w) for w in clip_windows])[:-1])
        clip_domains = np.asarray(list(domains))
        n_comp = n_components or default_components(len(raw))
        if refit_standardizer:
            standardizer = fit_standardizer(raw, floor=CALIBRATION_STD_FLOOR)
            held_out = cross_fitted_scores(
                clip_raw, clip_domains, n_components=n_comp, folds=folds, refit_standardizer=True
            )
        else:
            standardizer = None
            clip_embs = [standardize(r, bundle.arrays) for r in clip_raw]
            held_out = cross_fitted_scores(clip_embs, clip_domains, n_components=n_comp, folds=folds)
        window_domains = np.concatenate([[d] * len(r) for d, r in zip(clip_domains, clip_raw, strict=True)])
        window_clips = np.concatenate([[i] * len(r) for i, r in enumerate(clip_raw)])
        X = standardize(raw, standardizer or bundle.arrays)
        mahalanobis = MahalanobisScorer(n_components=n_comp).fit(X, window_domains, groups=window_clips)
        scorer = cls(
            bundle,
            mahalanobis,
            recipe=recipe,
            standardizer=standardizer,
            thresholds=gamma_thresholds(held_out),
            normal_scores=np.sort(held_out),
        )
        meta = {
            "format_version": 2,
            "domains": sorted(set(clip_domains.tolist())),
            "n_components": int(mahalanobis.components_.shape[0]),
            "recipe": list(recipe),
            "standardizer": "refitted on these clips" if refit_standardizer else "the model's",
        }
        return scorer, meta


def default_components(n_windows: int) -> int:
    """PCA size that the number of reference windows can support."""
    return int(max(2, min(32, n_windows // 4)))


def cross_fitted_scores(
    clip_embeddings: Sequence[np.ndarray],
    domains: np.ndarray,
    *,
    n_components: int,
    folds: int = 5,
    refit_standardizer: bool = False,
) -> np.ndarray:
    """Clip scores (max over windows) from scorers that never saw the clip: k-fold over clips
    (``clip_folds``, the same split the scorer's own per-domain scales use).

    A domain left with no fitting clips in a fold is scored against the other domains, which is what
    happens to a new recording whose domain was never seen. With ``refit_standardizer`` the embeddings are
    raw features and each fold standardises with a standardiser fitted on its own fitting clips only, so
    that a held-out clip never shapes the yardstick it is measured with.
    """
    n = len(clip_embeddings)
    scores = np.empty(n)
    for fit, test in clip_folds(np.arange(n), folds):
        X = np.concatenate([clip_embeddings[i] for i in fit])
        d = np.concatenate([[domains[i]] * len(clip_embeddings[i]) for i in fit])
        groups = np.concatenate([[i] * len(clip_embeddings[i]) for i in fit])
        standardizer = fit_standardizer(X, floor=CALIBRATION_STD_FLOOR) if refit_standardizer else None
        if standardizer is not None:
            X = standardize(X, standardizer)
        # Same per-domain scales as the final fit, so that thresholds and scores share one unit.
        scorer = MahalanobisScorer(n_components=min(n_components, len(X) - 1)).fit(X, d, groups=groups)
        for i in test:
            emb = clip_embeddings[i]
            if standardizer is not None:
                emb = standardize(emb, standardizer)
            scores[i] = scorer.score_samples(emb).max()
    return scores
