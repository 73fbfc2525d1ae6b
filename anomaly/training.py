"""Training a bundle: normal clips -> autoencoder -> scorer -> thresholds from held-out normals."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from anomaly.bundle import save_bundle
from anomaly.dcase import list_audio, parse_name
from anomaly.embedding import (
    DEFAULT_RECIPE,
    check_recipe,
    fit_standardizer,
    standardize,
    window_features,
)
from anomaly.errors import AudioInputError
from anomaly.familiarity import FAMILIARITY_CONFIG, Familiarity
from anomaly.features import FeatureParams, log_mel_file, windows
from anomaly.scoring import MahalanobisScorer, gamma_thresholds

log = logging.getLogger("anomaly")

HOLDOUT_SHARE = 0.2
MIN_TRAIN_CLIPS = 5


def training_files(data_dir: str | Path) -> list[Path]:
    """Normal clips to train on: ``DATA_DIR/train`` in DCASE layout, else every clip in ``DATA_DIR``
    whose name does not mark it as an anomaly."""
    data_dir = Path(data_dir)
    folder = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    return [p for p in list_audio(folder) if parse_name(p).label != "anomaly"]


def split_holdout(
    files: list[Path], seed: int, share: float = HOLDOUT_SHARE
) -> tuple[list[Path], list[Path]]:
    """Per domain, hold out ``share`` of the normals (at least one where a domain has three or more)."""
    rng = np.random.default_rng(seed)
    by_domain: dict[str, list[Path]] = {}
    for f in files:
        by_domain.setdefault(parse_name(f).domain, []).append(f)
    fit, held = [], []
    for domain in sorted(by_domain):
        group = by_domain[domain]
        order = rng.permutation(len(group))
        n_hold = max(1, round(share * len(group))) if len(group) >= 3 else 0
        held += [group[i] for i in order[:n_hold]]
        fit += [group[i] for i in order[n_hold:]]
    return sorted(fit), sorted(held)


def train_bundle(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    epochs: int = 20,
    params: FeatureParams | None = None,
    n_components: int = 32,
    recipe: tuple[str, ...] | list[str] = DEFAULT_RECIPE,
    max_ae_windows: int = 4000,
    description: str | None = None,
    synthetic: bool | None = None,
) -> dict:
    """Train the autoencoder, fit the scorer, calibrate thresholds and write a complete bundle.

    Returns the bundle's config.
    """
    from anomaly.model import CompiledEncoder, build_autoencoder, keras, train_autoencoder

    started = time.perf_counter()
    params = params or FeatureParams()
    files = training_files(data_dir)
    if len(files) < MIN_TRAIN_CLIPS:
        raise AudioInputError(
            str(data_dir), f"{len(files)} normal clips found; at least {MIN_TRAIN_CLIPS} needed"
        )
    fit_files, held_files = split_holdout(files, seed)
    if len(held_files) < 2:
        raise AudioInputError(str(data_dir), "too few normal clips to hold any out for calibration")
    log.info("training on %d normal clips, %d held out for calibration", len(fit_files), len(held_files))

    specs: list[np.ndarray] = []

    def load(group: list[Path], what: str) -> tuple[list[np.ndarray], list[str], list[Path]]:
        out, doms, kept = [], [], []
        for i, f in enumerate(group):
            try:
                spec = log_mel_file(f, params)
                out.append(windows(spec, params, name=f.name))
            except AudioInputError as exc:
                log.warning("skipping %s", exc)
                continue
            specs.append(spec)
            doms.append(parse_name(f).domain)
            kept.append(f)
            if (i + 1) % max(1, len(group) // 10) == 0 or i + 1 == len(group):
                log.info("log-mel of %s clips: %d/%d", what, i + 1, len(group))
        return out, doms, kept

    fit_windows, fit_domains, fit_files = load(fit_files, "training")
    held_windows, held_domains, held_files = load(held_files, "held-out")
    X = np.concatenate(fit_windows)
    norm_mean = X.mean(axis=(0, 2))
    norm_std = X.std(axis=(0, 2)) + 1e-3

    def normalise(w: np.ndarray) -> np.ndarray:
        return ((w - norm_mean[None, :, None]) / norm_std[None, :, None]).astype(np.float32)

    Xn = normalise(X)
    Hn = normalise(np.concatenate(held_windows))
    keras.utils.set_random_seed(seed)
    encoder, decoder, autoencoder = build_autoencoder(params.n_mels, params.window_frames, seed=seed)
    # The autoencoder learns the look of normal windows; a few thousand of them teach it as much as
    # all of them, at a fraction of the time. The scorer below still sees every window.
    rng = np.random.default_rng(seed)
    ae_windows = Xn if len(Xn) <= max_ae_windows else Xn[rng.choice(len(Xn), max_ae_windows, replace=False)]
    log.info("training the autoencoder on %d windows for %d epochs", len(ae_windows), epochs)
    history = train_autoencoder(
        autoencoder, ae_windows[..., None], epochs=epochs, seed=seed, validation=Hn[..., None]
    )

    net = CompiledEncoder(encoder, decoder)
    recipe = check_recipe(recipe)

    def features(w_db: np.ndarray, w_norm: np.ndarray) -> np.ndarray:
        return window_features(net, recipe, w_db, w_norm)

    raw = features(X, Xn)
    standardizer = fit_standardizer(raw)
    emb = standardize(raw, standardizer)
    window_domains = np.concatenate([[d] * len(w) for d, w in zip(fit_domains, fit_windows, strict=True)])
    window_clips = np.concatenate([[i] * len(w) for i, w in enumerate(fit_windows)])
    scorer = MahalanobisScorer(n_components=n_components).fit(emb, window_domains, groups=window_clips)

    held_scores = np.array(
        [
            scorer.score_samples(standardize(features(w, normalise(w)), standardizer)).max()
            for w in held_windows
        ]
    )
    thresholds = gamma_thresholds(held_scores)
    log.info(
        "thresholds from %d held-out normals: maintenance %.3f, severe %.3f",
        len(held_scores),
        thresholds.maintenance,
        thresholds.severe,
    )

    # Normal reconstruction error per mel band: the yardstick of the anomaly map.
    sample = Xn[rng.choice(len(Xn), size=min(len(Xn), 2000), replace=False)]
    _, recon = net.embed_and_reconstruct(sample)
    err = np.square(sample - recon)
    # What the model knows, for telling an unfamiliar machine from a faulty gearbox (all normal clips).
    familiarity = Familiarity(params.window_frames).fit(specs, fit_domains + held_domains)
    arrays = {
        **scorer.to_arrays(),
        **familiarity.to_arrays(),
        **standardizer,
        "norm_mean": norm_mean.astype(np.float32),
        "norm_std": norm_std.astype(np.float32),
        "recon_error_mean": err.mean(axis=(0, 2)).astype(np.float32),
        "recon_error_std": (err.std(axis=(0, 2)) + 1e-6).astype(np.float32),
        "calibration_scores": np.sort(held_scores),
    }
    config = {
        "preprocessing": params.to_dict(),
        "embedding": {
            "recipe": list(recipe),
            "encoder_pooling": "average and max over the last feature map",
            "dim": int(emb.shape[1]),
        },
        "scorer": {
            "method": "PCA + Ledoit-Wolf covariance per domain, Mahalanobis distance to the nearest domain",
            "unit": "distance divided by the domain's median held-out normal window distance (1 = typical)",
            "domain_scales": [round(float(x), 4) for x in scorer.scales_],
            "n_components": int(scorer.components_.shape[0]),
            "domains": scorer.domains_,
            "clip_score": "max over windows",
        },
        "thresholds": thresholds.to_dict(),
        "familiarity": FAMILIARITY_CONFIG,
        "training": {
            "data": description or f"normal clips from {Path(data_dir).name}",
            "synthetic": bool(synthetic) if synthetic is not None else False,
            "n_clips": len(fit_files) + len(held_files),
            "n_fit": len(fit_files),
            "n_holdout": len(held_files),
            "domains_fit": dict(Counter(fit_domains)),
            "domains_holdout": dict(Counter(held_domains)),
            "seed": seed,
            "epochs": epochs,
            "autoencoder_windows": int(len(ae_windows)),
            "final_loss": history[-1] if history else None,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    save_bundle(out_dir, encoder=encoder, decoder=decoder, arrays=arrays, config=config)
    log.info("bundle written to %s in %.0f s", out_dir, time.perf_counter() - started)
    return config
