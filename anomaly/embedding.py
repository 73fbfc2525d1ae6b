"""What the scorer sees for each window: a recipe of standardised feature blocks.

A recipe is a list of block names, recorded in the bundle's ``config.json`` so that calibration files
stay consistent with the model:

- ``encoder_avg``, ``encoder_max``: the encoder's average- and max-pooled last feature map. Max pooling
  keeps short events (a 50 ms click) visible.
- ``logmel_mean``, ``logmel_std``, ``logmel_max``, ``logmel_p95``: per-band statistics over the window's
  frames, in dB. They carry the absolute band levels that wear, lubrication loss and imbalance change.

Each block is standardised on its own (mean 0, variance 1 per dimension over the normal training windows)
before the blocks are joined, so that no block wins by its units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCKS = ("encoder_avg", "encoder_max", "logmel_mean", "logmel_std", "logmel_max", "logmel_p95")
DEFAULT_RECIPE = ("encoder_max", "logmel_mean", "logmel_p95", "logmel_max")


def check_recipe(recipe: Sequence[str]) -> tuple[str, ...]:
    unknown = [b for b in recipe if b not in BLOCKS]
    if unknown or not recipe:
        raise ValueError(f"unknown embedding blocks {unknown}; choose from {list(BLOCKS)}")
    return tuple(recipe)


def uses_encoder(recipe: Sequence[str]) -> bool:
    return any(b.startswith("encoder_") for b in recipe)


def raw_features(
    recipe: Sequence[str], windows_db: np.ndarray, encoder_embedding: np.ndarray | None
) -> np.ndarray:
    """Join the recipe's blocks for each window, before standardisation.

    Parameters
    ----------
    windows_db : ``(n, n_mels, frames)`` log-mel windows in dB (not normalised).
    encoder_embedding : ``(n, 2 * channels)``: average then max pooling, as the encoder outputs it.
    """
    parts = []
    for block in recipe:
        if block.startswith("encoder_"):
            if encoder_embedding is None:
                raise ValueError("this recipe needs the encoder's embedding")
            half = encoder_embedding.shape[1] // 2
            parts.append(
                encoder_embedding[:, :half] if block == "encoder_avg" else encoder_embedding[:, half:]
            )
        elif block == "logmel_mean":
            parts.append(windows_db.mean(axis=2))
        elif block == "logmel_std":
            parts.append(windows_db.std(axis=2))
        elif block == "logmel_max":
            parts.append(windows_db.max(axis=2))
        elif block == "logmel_p95":
            parts.append(np.percentile(windows_db, 95, axis=2))
        else:
            raise ValueError(f"unknown embedding block {block!r}")
    return np.concatenate(parts, axis=1).astype(np.float64)


def fit_standardizer(features: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension mean and spread of normal features, stored as plain arrays in the bundle."""
    return {"embed_mean": features.mean(axis=0), "embed_std": features.std(axis=0) + 1e-6}


def standardize(features: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    return (features - arrays["embed_mean"]) / arrays["embed_std"]
