"""The command line, run as a user runs it: ``python -m anomaly ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly.scoring import LABELS

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["synth", "train", "predict", "calibrate", "evaluate", "publish", "bench"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    out = run(command, "--help").stdout
    assert "usage: python -m anomaly " + command in out


def test_predict_json_contract_and_bad_files(tiny_bundle, tiny_corpus, tmp_path):
    good = sorted((tiny_corpus / "test").glob("*.wav"))[:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    proc = run(
        "predict", str(good[0]), str(bad), str(good[1]), "--bundle", str(tiny_bundle), "--json", check=False
    )
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["file"]).name for r in lines] == [good[0].name, good[1].name]
    for r in lines:
        assert set(r) >= {"file", "score", "label", "familiar", "compared_with", "percentile", "thresholds"}
        assert set(r) <= {"file", "score", "label", "familiar", "advice", "compared_with", "percentile",
                          "thresholds", "windows", "model", "departures", "notes"}
        assert isinstance(r["familiar"], bool) and ("advice" in r) == (not r["familiar"])
        assert r["label"] in LABELS
        assert set(r["thresholds"]) == {"maintenance", "severe"}
        assert set(r["model"]) >= {"source", "revision"}
        assert len(r["windows"]) == 9
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.wav" in errors[0] and "not a readable audio" in errors[0]


def test_predict_threshold_flags_override(tiny_bundle, tiny_corpus):
    clip = str(sorted((tiny_corpus / "test").glob("*normal*"))[0])
    r = json.loads(
        run(
            "predict",
            clip,
            "--bundle",
            str(tiny_bundle),
            "--json",
            "--maintenance",
            "0.001",
            "--severe",
            "0.002",
        ).stdout
    )
    assert r["label"] == "SEVERE ANOMALY" and r["thresholds"] == {"maintenance": 0.001, "severe": 0.002}


def test_missing_bundle_is_a_clear_error(tmp_path, tiny_corpus):
    clip = str(sorted((tiny_corpus / "test").glob("*.wav"))[0])
    proc = run("predict", clip, "--bundle", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_train_calibrate_predict_evaluate_end_to_end(tiny_corpus, tmp_path):
    bundle = tmp_path / "bundle"
    proc = run("train", str(tiny_corpus), "--out", str(bundle), "--epochs", "2", "--seed", "3")
    assert "epoch 2/2: loss" in proc.stderr
    assert (bundle / "encoder.keras").is_file() and (bundle / "config.json").is_file()

    report = json.loads(
        run("evaluate", str(tiny_corpus), "--bundle", str(bundle), "--json").stdout.splitlines()[-1]
    )
    assert set(report) >= {"source", "target"}
    assert report["source"]["auc"] >= 0.75, report
    assert 0.0 <= report["source"]["pauc"] <= 1.0
    assert set(report["source"]["faults"]) == {"tooth", "wear", "bearing", "imbalance", "lubrication"}

    cal = tmp_path / "cal.npz"
    run("calibrate", str(tiny_corpus / "train"), "--out", str(cal), "--bundle", str(bundle))
    r = json.loads(
        run(
            "predict",
            str(sorted((tiny_corpus / "test").glob("*.wav"))[0]),
            "--bundle",
            str(bundle),
            "--calibration",
            str(cal),
            "--json",
        ).stdout
    )
    assert r["model"]["calibration"]["n_clips"] == 33
