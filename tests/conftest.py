"""Shared fixtures: a tiny synthetic corpus and a tiny model trained on it, made once per test session.

The tiny model is trained with the real ``train`` pipeline (real Keras autoencoder, real scorer), only
small, so that the suite stays within minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY_SEED = 11


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus in DCASE layout: 30 source + 3 target normals, 6+6 test clips per domain."""
    from anomaly.synth import write_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    write_corpus(out, seed=TINY_SEED, n_train=30, n_test=6)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_corpus, tmp_path_factory) -> Path:
    """A bundle trained by the real pipeline on the tiny corpus (few epochs)."""
    from anomaly.training import train_bundle

    out = tmp_path_factory.mktemp("tiny_bundle")
    train_bundle(tiny_corpus, out, seed=TINY_SEED, epochs=3, n_components=32, synthetic=True)
    return out


@pytest.fixture(scope="session")
def tiny_detector(tiny_bundle):
    from anomaly.detector import Detector

    return Detector.load(tiny_bundle)
