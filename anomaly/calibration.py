"""Fitting what "normal" means on a user's clips: calibration files, below the Detector that uses them.

Two kinds (``anomaly.bundle.Calibration``):

- ``fit_reference_calibration``: format 3, the default. A ``Reference`` (``anomaly.reference``) and a
  ``Familiarity`` check fitted on the clips' log-mels; no network involved.
- ``fit_window_calibration``: format 2 (and 1 with the model's standardiser). The model's window scorer
  (PCA + Ledoit-Wolf per domain) refitted on window features the Detector computed with its network, with
  thresholds from k-fold held-out clip scores (``cross_fitted_scores``).

Nothing here loads a model or reads files: inputs are arrays, outputs a ``Calibration``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np

from anomaly.bundle import CALIBRATION_FORMAT_VERSION, Bundle, Calibration
from anomaly.embedding import CALIBRATION_STD_FLOOR, check_recipe, fit_standardizer, standardize
from anomaly.errors import CalibrationError
from anomaly.familiarity import USER_SPREAD_FLOOR_DB, ShapeFamiliarity
from anomaly.reference import Recipe, Reference
from anomaly.scoring import MahalanobisScorer, clip_folds, gamma_thresholds
from anomaly.sound import Sound

# Fewer user clips than this cannot give a spread for the thresholds.
MIN_CALIBRATION_CLIPS = 3
# Below this many clips the thresholds are wide and we say so.
ROUGH_CALIBRATION_CLIPS = 10


def check_clip_count(n_clips: int) -> None:
    """Refuse a calibration on fewer than ``MIN_CALIBRATION_CLIPS`` usable clips."""
    if n_clips < MIN_CALIBRATION_CLIPS:
        raise CalibrationError(
            "calibration",
            f"{n_clips} usable normal clip(s); at least {MIN_CALIBRATION_CLIPS} are needed "
            f"({ROUGH_CALIBRATION_CLIPS} or more for tighter thresholds)",
        )


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def fit_reference_calibration(
    clips: Sequence[Sound | np.ndarray],
    bundle: Bundle,
    *,
    recipe: Recipe | None = None,
    skipped: Sequence[str] = (),
    name: str | None = None,
) -> Calibration:
    """A reference calibration (format 3) from normal clips: ``Sound``s, or log-mels in dB (one array per
    clip) for mel-block recipes."""
    n_clips = len(clips)
    check_clip_count(n_clips)
    params = bundle.params
    reference = Reference(recipe, sr=params.sr, hop_length=params.hop_length).fit(clips)
    familiarity = ShapeFamiliarity(params.window_frames, USER_SPREAD_FLOOR_DB).fit(
        [reference.sound(c).log_mel for c in clips]
    )
    meta = {
        "kind": "gearbox-sound-check calibration",
        "format_version": CALIBRATION_FORMAT_VERSION,
        "method": "reference",
        "encoder_sha256": bundle.encoder_sha256,
        "preprocessing": bundle.config["preprocessing"],
        "n_clips": n_clips,
        "skipped": list(skipped),
        "domains": ["user"],
        "reference_recipe": reference.recipe.to_dict(),
        "segment_seconds": round(reference.segment_frames_ * params.frame_seconds, 3),
        "rough": n_clips < ROUGH_CALIBRATION_CLIPS,
        "created": _now(),
    }
    return Calibration(
        scorer=None,
        thresholds=reference.thresholds,
        normal_scores=np.sort(reference.normal_scores_),
        meta=meta,
        reference=reference,
        familiarity=familiarity,
    ).named(name)


def fit_window_calibration(
    clip_raw: Sequence[np.ndarray],
    domains: Sequence[str],
    bundle: Bundle,
    *,
    recipe: Sequence[str],
    refit_standardizer: bool = True,
    n_components: int | None = None,
    folds: int = 5,
    skipped: Sequence[str] = (),
) -> Calibration:
    """A window-recipe calibration (format 2) from each clip's raw window features (``(windows, dim)``).

    With ``refit_standardizer=False`` the bundle's standardiser is kept, which fits only the bundle's
    recipe.
    """
    n_clips = len(clip_raw)
    check_clip_count(n_clips)
    recipe = check_recipe(recipe)
    if not refit_standardizer and recipe != check_recipe(bundle.config["embedding"]["recipe"]):
        raise ValueError("the model's standardiser fits only the model's recipe; refit it for another")
    raw = np.concatenate(clip_raw)
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
    scorer = MahalanobisScorer(n_components=n_comp).fit(X, window_domains, groups=window_clips)
    meta = {
        "kind": "gearbox-sound-check calibration",
        "format_version": 2,
        "encoder_sha256": bundle.encoder_sha256,
        "preprocessing": bundle.config["preprocessing"],
        "n_clips": n_clips,
        "skipped": list(skipped),
        "domains": sorted(set(clip_domains.tolist())),
        "n_components": int(scorer.components_.shape[0]),
        "recipe": list(recipe),
        "standardizer": "refitted on these clips" if refit_standardizer else "the model's",
        "rough": n_clips < ROUGH_CALIBRATION_CLIPS,
        "created": _now(),
    }
    return Calibration(
        scorer=scorer,
        thresholds=gamma_thresholds(held_out),
        normal_scores=np.sort(held_out),
        meta=meta,
        standardizer=standardizer,
    )


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
