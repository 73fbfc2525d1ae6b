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
    train_bundle(tiny_corpus, out, seed=TINY_SEED, epochs=3, synthetic=True)
    return out


@pytest.fixture(scope="session")
def tiny_detector(tiny_bundle):
    from anomaly.detector import Detector

    return Detector.load(tiny_bundle)


# --- the app, launched for real once per session (tests/test_app.py and tests/test_browser.py) ----------

from contextlib import contextmanager  # noqa: E402 - kept with the fixtures that use it

APP_START_TIMEOUT_S = 240.0
# Printed by gradio after the start-up events (example caching) have run: from then on the app is ready.
APP_READY_MARKER = "Streamable HTTP URL"


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(work: Path, **env_overrides: str):
    """``python app.py`` in a subprocess, as a Space runs it; yields ``.url``, ``.log``, ``.work`` and ``.pid``.

    The port reaches the app only through ``GRADIO_SERVER_PORT`` (app.py passes none); the working
    directory is ``work`` (so nothing depends on it), which also holds a fresh example cache and upload
    folder; no Hub repo is set unless ``env_overrides`` sets one, and the Hub is never contacted.
    """
    import subprocess
    import time
    import urllib.request
    from types import SimpleNamespace

    port = _free_port()
    env = dict(os.environ)
    for name in ("ANOMALY_HUB_REPO", "ANOMALY_HUB_REVISION", "GRADIO_SERVER_NAME", "GRADIO_ROOT_PATH"):
        env.pop(name, None)
    env.update(
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_EXAMPLES_CACHE=str(work / "examples-cache"),
        GRADIO_TEMP_DIR=str(work / "uploads"),
        HF_HUB_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_overrides)
    log_path = work / "app.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")],
            cwd=work,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT_S
        while APP_READY_MARKER not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"app.py not ready after {APP_START_TIMEOUT_S:g} s:\n{log_path.read_text()[-4000:]}"
                )
            time.sleep(0.5)
        with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=30) as response:
            assert response.status == 200
        yield SimpleNamespace(url=url, log=log_path, work=work, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The app, launched once for the session (tests/test_app.py and tests/test_browser.py share it)."""
    with running_app(tmp_path_factory.mktemp("app")) as server:
        yield server


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server.url


@pytest.fixture(scope="session")
def example_clips(tmp_path_factory) -> Path:
    """The bundled examples (``examples/*.wav``), or the same set made by ``generate_examples`` if absent."""
    bundled = ROOT / "examples"
    if (bundled / "normal_source.wav").is_file() and list(bundled.glob("fault_*.wav")):
        return bundled
    from anomaly.synth import generate_examples

    out = tmp_path_factory.mktemp("examples")
    generate_examples(out, seed=0)
    return out


@pytest.fixture(scope="session")
def launch_app():
    """``running_app`` for a test that needs its own app (other environment variables)."""
    return running_app
