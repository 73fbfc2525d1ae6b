"""Embedding recipes: blocks, their order and sizes, standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly.embedding import (
    BLOCKS,
    check_recipe,
    fit_standardizer,
    raw_features,
    standardize,
    upper_percentile,
    uses_encoder,
)


def test_upper_percentile_equals_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(-40, 10, size=(7, 128, 64)).astype(np.float32)
    for q in (50.0, 95.0, 99.0, 100.0):
        np.testing.assert_allclose(upper_percentile(w, q), np.percentile(w, q, axis=2), rtol=1e-5, atol=1e-4)


def test_blocks_in_recipe_order_with_expected_sizes():
    rng = np.random.default_rng(1)
    w = rng.normal(-40, 10, size=(3, 128, 64))
    enc = rng.normal(size=(3, 128))
    feats = raw_features(("logmel_mean", "encoder_max", "logmel_max"), w, enc)
    assert feats.shape == (3, 128 + 64 + 128)
    np.testing.assert_allclose(feats[:, :128], w.mean(axis=2))
    np.testing.assert_allclose(feats[:, 128:192], enc[:, 64:])
    np.testing.assert_allclose(feats[:, 192:], w.max(axis=2))


def test_encoder_blocks_need_the_encoder():
    assert uses_encoder(("encoder_avg",)) and not uses_encoder(("logmel_mean", "logmel_std"))
    with pytest.raises(ValueError):
        raw_features(("encoder_avg",), np.zeros((1, 128, 64)), None)


def test_unknown_or_empty_recipe_is_refused():
    assert check_recipe(list(BLOCKS)[:2]) == tuple(BLOCKS[:2])
    with pytest.raises(ValueError):
        check_recipe(("logmel_mean", "mfcc"))
    with pytest.raises(ValueError):
        check_recipe(())


def test_standardizer_gives_zero_mean_unit_spread():
    rng = np.random.default_rng(2)
    X = rng.normal(5, 3, size=(500, 10))
    Z = standardize(X, fit_standardizer(X))
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-3)
