"""The verbs of ``python -m anomaly`` (``anomaly.commands``) import only what they need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from anomaly.scoring import LABELS

ROOT = Path(__file__).resolve().parent.parent

# Runs the CLI with gradio and pandas made to look not installed (as in an install without the app's extra),
# and notes every module that asked for them. TensorFlow's Keras and scikit-learn ask for pandas whenever it
# is installed and do without it; a module of ours must not ask at all.
WITHOUT_THE_WEB_STACK = """
import json, sys

BLOCKED = ("gradio", "pandas")
asked = []


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        asked.append([name, frame.f_globals.get("__name__", "?") if frame else "?"])
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, Absent())
from anomaly.cli import main

code = main(sys.argv[1:])
print(json.dumps({"exit": code, "asked": asked}))
"""


def test_predict_needs_neither_gradio_nor_pandas(tiny_bundle, tmp_path):
    from anomaly.synth import synthesize_clip

    wave, _ = synthesize_clip("source", "anomaly", 5, fault="tooth", severity=1.0)
    clip = tmp_path / "gearbox.wav"
    sf.write(clip, wave, 16000, subtype="PCM_16")
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_WEB_STACK, "predict", str(clip), "--bundle", str(tiny_bundle)],
        cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    *scored, report = proc.stdout.strip().splitlines()
    outcome = json.loads(report)
    assert outcome["exit"] == 0, proc.stderr[-3000:]
    ours = [(name, importer) for name, importer in outcome["asked"] if importer.split(".")[0] == "anomaly"]
    assert not ours, f"our modules asked for the web stack: {ours}"
    assert len(scored) == 1
    name, score, percentile, label = scored[0].split("\t")
    assert name == str(clip) and float(score) > 0 and percentile.endswith("%") and label in LABELS
