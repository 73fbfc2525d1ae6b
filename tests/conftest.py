"""Shared fixtures: a tiny synthetic corpus and a tiny model trained on it, made once per test session.

The tiny model is trained with the real ``train`` pipeline (real Keras autoencoder, real scorer), only
small, so that the suite stays within minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent

# The developer's quick run, ``pytest -m "not browser and not slow"`` (README, Development), leaves these out;
# CI runs everything. ``browser``: every test of a tests/test_browser*.py. ``slow``: the tests below, each
# 5 to 25 s of its own (measured with --durations on 2 cores), named here so that the list stays in one
# place; a test can also say ``@pytest.mark.slow`` itself.
SLOW_TESTS = {
    "test_app.py::test_an_examples_cache_left_half_done_by_a_crash_is_rebuilt",
    "test_app.py::test_an_unavailable_hub_model_falls_back_and_the_page_says_why",
    "test_app.py::test_an_upload_flood_leaves_the_app_answering_with_a_clear_message",
    "test_archive.py::test_separate_scheduler_scores_every_file_with_its_folders_calibration",
    "test_archive.py::test_killed_local_run_resumes_with_only_the_rest_and_the_same_table",
    "test_faults.py::test_corrupted_hub_download_is_refused_and_the_output_names_the_model",
    "test_faults.py::test_silent_hub_is_given_up_on_after_its_time_box",
    "test_load.py::test_load_test_passes_against_the_app",
    "test_load.py::test_a_batch_flood_or_an_analyze_burst_never_starves_another_clients_score",
    "test_limits.py::test_a_calibration_file_holding_a_2_gb_zero_array",
    "test_archive.py::test_rerun_scores_only_new_or_changed_files_and_drops_removed_ones",
    "test_surfaces.py::test_every_surface_gives_the_same_label",
    "test_commands.py::test_predict_needs_neither_gradio_nor_pandas",
    "test_cli.py::test_train_calibrate_predict_evaluate_end_to_end",
    "test_faults.py::test_unreachable_hub_falls_back_to_the_bundled_model",
    "test_detector.py::test_a_long_batch_holds_a_few_files_at_a_time",
    "test_package.py::test_tensorflow_loads_quietly_and_stderr_works_after_it",
    "test_faults.py::test_app_refuses_to_start_on_a_damaged_bundle_with_one_clear_line",
}


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        module = item.path.name
        name = f"{module}::{item.originalname}"
        if module.startswith("test_browser"):
            item.add_marker(pytest.mark.browser)
        if name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
            seen.add(name)
    # A renamed test would quietly join the quick run: say so (only when its module was collected at all).
    collected = {item.path.name for item in items}
    for name in sorted(SLOW_TESTS - seen):
        if name.split("::")[0] in collected:
            warnings.warn(pytest.PytestConfigWarning(f"SLOW_TESTS names no test: {name}"), stacklevel=1)

TINY_SEED = 11


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus in DCASE layout: 30 source + 3 target normals, 6+6 test clips per domain."""
    from anomaly.synth import write_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    write_corpus(out, seed=TINY_SEED, n_train=30, n_test=6)
    return out


TINY_TRAIN_LOG = "train.log"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_corpus, tmp_path_factory) -> Path:
    """A bundle trained once per run by the real ``train`` command (a subprocess, as a user runs it) on the
    tiny corpus, with few epochs; its log is kept next to it (``TINY_TRAIN_LOG``) for tests/test_cli.py."""
    import subprocess

    out = tmp_path_factory.mktemp("tiny_bundle")
    command = [sys.executable, "-m", "anomaly", "train", str(tiny_corpus), "--out", str(out)]
    command += ["--seed", str(TINY_SEED), "--epochs", "3", "--synthetic"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (out.parent / TINY_TRAIN_LOG).write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session", autouse=True)
def app_data_dir(tmp_path_factory) -> Path:
    """The app's data folder (where the browser store's signing secret is kept), private to this run."""
    folder = tmp_path_factory.mktemp("app-data")
    saved = os.environ.get("GEARBOX_DATA_DIR")
    os.environ["GEARBOX_DATA_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("GEARBOX_DATA_DIR", None)
    else:
        os.environ["GEARBOX_DATA_DIR"] = saved


@pytest.fixture(scope="session")
def tiny_calibration(tiny_bundle, tiny_corpus, tmp_path_factory) -> Path:
    """A calibration file made by the tiny model on 5 normal clips of the tiny corpus."""
    from anomaly.detector import Detector

    normals = sorted((tiny_corpus / "train").glob("*source*"))[:5]
    out = tmp_path_factory.mktemp("tiny_calibration") / "cal.npz"
    return Detector.load(tiny_bundle).calibrate(normals, name="Pump 3").save(out)


def rewrite_calibration(source: Path, out: Path, *, meta: dict | None = None, **arrays) -> Path:
    """A copy of a calibration file with some of its meta entries and arrays replaced (a hostile file)."""
    import json

    import numpy as np

    with np.load(source, allow_pickle=False) as data:
        content = {k: data[k] for k in data.files}
    content["meta"] = np.asarray(json.dumps({**json.loads(str(content["meta"])), **(meta or {})}))
    content.update(arrays)
    with open(out, "wb") as fh:
        np.savez(fh, **content)
    return out


@pytest.fixture(scope="session")
def hostile_calibration():
    return rewrite_calibration


@pytest.fixture(scope="session")
def tiny_detector(tiny_bundle):
    from anomaly.detector import Detector

    return Detector.load(tiny_bundle)


# --- the app, launched for real once per session (tests/test_app.py and tests/test_browser.py) ----------

APP_START_TIMEOUT_S = 240.0


@contextmanager
def running_app(work: Path, **env_overrides: str):
    """``python app.py`` in a subprocess, as a Space runs it (``anomaly.ui.launcher``, the benchmark's
    launcher too), ready once its examples are cached; yields an ``AppServer`` (``.url``, ``.log``, ``.work``,
    ``.pid``). The port reaches the app only through ``GRADIO_SERVER_PORT`` (app.py passes none); the working
    directory is ``work``, so nothing depends on it.
    """
    from anomaly.ui.launcher import app_server

    with app_server(work, **env_overrides) as server:
        try:
            server.wait_until_ready(APP_START_TIMEOUT_S)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield server


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


@pytest.fixture(scope="session")
def app_module(tiny_bundle):
    """``app.py``'s page built in this process for the tiny model: its ``demo``, ``page``, ``live``, ``c``,
    ``examples`` and ``runtime`` (``app.build``; nothing is warmed up or launched)."""
    import app
    from anomaly.ui.runtime import Runtime

    return app.build(Runtime.load(tiny_bundle))
