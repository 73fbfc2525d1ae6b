"""One verdict, everywhere: every surface gives the same label for the same clip, side by side.

Two clips: a bundled example (a worn gearbox, far above the severe threshold) and a sound the served model
finds unfamiliar (loud band-limited noise, nothing like a gearbox). The surfaces: the page's Analyze handler
(built in this process with the served model), the launched app's /score, /analyze and /batch (table and
CSV) over gradio_client, ``predict --json`` and ``score-archive`` as subprocesses (one run each), and a live
session fed the clip in microphone-sized chunks. The expected label is the engine's own (``Detector.analyze``);
the unfamiliar clip must be UNFAMILIAR everywhere, never a severity.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from anomaly.bundle import DEFAULT_BUNDLE
from anomaly.scoring import LABELS, UNFAMILIAR

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHUNK_S = 0.1  # what gradio's microphone stream hands the live handler at a time


@pytest.fixture(scope="module")
def served_page():
    """``app.py``'s page built in this process for the model the launched app serves."""
    import app
    from anomaly.ui.runtime import Runtime

    return app.build(Runtime.load(os.environ.get("ANOMALY_BUNDLE") or DEFAULT_BUNDLE))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The two clips, in one folder (the archive's)."""
    from scipy.signal import butter, sosfilt

    folder = tmp_path_factory.mktemp("surfaces")
    worn = folder / "fault_wear.wav"
    worn.write_bytes((ROOT / "examples" / "fault_wear.wav").read_bytes())
    noise = np.random.default_rng(5).normal(0.0, 0.5, 16000 * 6)
    band = sosfilt(butter(4, [1000, 3000], btype="band", fs=16000, output="sos"), noise) * 3
    strange = folder / "strange_machine.wav"
    sf.write(strange, np.clip(band, -1, 1), 16000, subtype="PCM_16")
    return {"example": worn, "unfamiliar": strange}


def _run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "anomaly", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_every_surface_gives_the_same_label(served_page, clips, app_url, tmp_path):
    from anomaly.live import LiveSession
    from anomaly.ui.views import UNFAMILIAR_VERDICT, verdict_colour

    detector = served_page.runtime.detector
    expected = {kind: detector.analyze(path) for kind, path in clips.items()}
    assert expected["example"].label == LABELS[2], expected["example"]
    assert expected["unfamiliar"].label == UNFAMILIAR and not expected["unfamiliar"].familiar
    labels = {kind: {"engine": a.label} for kind, a in expected.items()}

    c = served_page.c
    client = Client(app_url, verbose=False, download_files=True)
    files = [handle_file(str(p)) for p in clips.values()]
    table, csv_path = client.predict(files, api_name="/batch")
    with open(csv_path, newline="") as fh:
        csv_rows = {row["file"]: row for row in csv.DictReader(fh)}
    table_rows = {row[0]: row for row in table["data"]}

    for kind, path in clips.items():
        seen = labels[kind]
        shown = served_page.page.show_analysis(str(path), True, None)[c.label]
        # The page says the verdict in words; the label is the one its words stand for.
        words = shown.value["label"]
        assert shown.color == verdict_colour(words)
        seen["page"] = {UNFAMILIAR_VERDICT: UNFAMILIAR, **{label: label for label in LABELS}}.get(words, words)
        seen["/score"] = client.predict(handle_file(str(path)), api_name="/score")["label"]
        verdict = client.predict(handle_file(str(path)), False, api_name="/analyze")[2]
        seen["/analyze"] = verdict["label"] if isinstance(verdict, dict) else verdict
        seen["/batch table"] = table_rows[path.name][3]
        seen["/batch CSV"] = csv_rows[path.name]["label"]
        live = LiveSession(detector.params)
        wave, sr = sf.read(path, dtype="float32")
        step = round(CHUNK_S * sr)
        readings = [r for i in range(0, len(wave), step) for r in live.feed(wave[i : i + step], sr, detector)]
        scored = {r.label for r in readings if r.score is not None}
        assert len(scored) == 1, f"{path.name}: live readings disagree among themselves: {scored}"
        seen["live"] = scored.pop()

    predicted = _run("predict", *map(str, clips.values()), "--json").stdout.splitlines()
    by_file = {Path(d["file"]).name: d for d in map(json.loads, predicted)}
    _run("score-archive", str(clips["example"].parent), "--out", str(tmp_path / "a.parquet"), "--workers", "1")
    import pandas as pd

    archive = pd.read_parquet(tmp_path / "a.parquet").set_index("path")
    for kind, path in clips.items():
        labels[kind]["predict --json"] = by_file[path.name]["label"]
        labels[kind]["score-archive"] = archive.loc[path.name, "label"]

    for kind, seen in labels.items():
        assert set(seen.values()) == {seen["engine"]}, f"{kind}: {seen}"
