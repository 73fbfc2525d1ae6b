"""The command line, run as a user runs it: ``python -m anomaly ...`` in a subprocess."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from anomaly.scoring import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["synth", "train", "predict", "calibrate", "evaluate", "realbench", "publish", "bench", "score-archive"]


def cli(*args: str, check: bool = True) -> SimpleNamespace:
    """``python -m anomaly ARGS`` in this process (``anomaly.cli.main``): the same code without starting
    Python and TensorFlow again; ``returncode``, ``stdout`` and ``stderr`` (with the log) as ``run`` gives."""
    from anomaly.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler, level = logging.StreamHandler(err), root.level
    root.addHandler(handler)  # before main(): its basicConfig then leaves the logging alone
    root.setLevel(logging.INFO)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, or a usage error
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    proc = SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    if check and code != 0:
        raise AssertionError(f"exit {code}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m anomaly ARGS`` as a user runs it: a new process, its exit code and its two streams."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
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
    out = cli(command, "--help").stdout
    assert "usage: python -m anomaly " + command in out


def test_predict_json_contract_and_bad_files(tiny_bundle, tiny_corpus, tmp_path):
    good = sorted((tiny_corpus / "test").glob("*.wav"))[:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    proc = cli(
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
        assert r["label"] in VERDICTS
        assert set(r["thresholds"]) == {"maintenance", "severe"}
        assert set(r["model"]) >= {"source", "revision"}
        assert len(r["windows"]) == 9
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.wav" in errors[0] and "not a readable audio" in errors[0]


def test_predict_threshold_flags_override(tiny_bundle, tiny_corpus):
    clip = str(sorted((tiny_corpus / "test").glob("*normal*"))[0])
    r = json.loads(
        cli(
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


def test_train_calibrate_predict_evaluate_end_to_end(tiny_corpus, tiny_bundle, tmp_path):
    """``train`` is the session's tiny bundle (tests/conftest.py runs the command once); then the others."""
    from conftest import TINY_TRAIN_LOG

    bundle = tiny_bundle
    assert "epoch 3/3: loss" in (bundle.parent / TINY_TRAIN_LOG).read_text()
    assert (bundle / "encoder.keras").is_file() and (bundle / "config.json").is_file()

    report = json.loads(
        cli("evaluate", str(tiny_corpus), "--bundle", str(bundle), "--json").stdout.splitlines()[-1]
    )
    assert set(report) >= {"source", "target"}
    assert report["source"]["auc"] >= 0.75, report
    assert 0.0 <= report["source"]["pauc"] <= 1.0
    assert set(report["source"]["faults"]) == {"tooth", "wear", "bearing", "imbalance", "lubrication"}

    cal = tmp_path / "cal.npz"
    cli("calibrate", str(tiny_corpus / "train"), "--out", str(cal), "--bundle", str(bundle))
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


def test_a_hub_failure_during_publish_is_one_line_and_exit_2(tiny_bundle):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly", "publish", str(tiny_bundle), "--repo-id", "me/gearbox", "--token", "x"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: me/gearbox: the Hub cannot be reached ([Errno 111] Connection refused)"]


def test_too_few_calibration_clips_is_one_line_and_exit_1(tiny_bundle, tiny_corpus, tmp_path):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:2]
    proc = cli("calibrate", *map(str, normals), "--bundle", str(tiny_bundle), "--out", str(tmp_path / "c.npz"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: calibration: 2 usable normal clip(s); at least 3")
    assert "Traceback" not in proc.stderr


def test_the_error_family():
    from anomaly.errors import AudioInputError, BundleError, CalibrationError, GearboxError, HubError

    assert issubclass(CalibrationError, AudioInputError) and issubclass(AudioInputError, ValueError)
    assert issubclass(HubError, BundleError) and issubclass(BundleError, RuntimeError)
    assert all(issubclass(e, GearboxError) for e in (AudioInputError, CalibrationError, BundleError, HubError))


def _error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        (["--maintenance", "-1"], "'-1': a threshold is a number above 0"),
        (["--severe", "nan"], "'nan': a threshold is a number above 0"),
        (["--severe", "1e400"], "'1e400': a threshold is a number above 0"),
        (["--maintenance", "abc"], "'abc' is not a number"),
        (["--maintenance", "5", "--severe", "1"], "--maintenance 5 must be below --severe 1"),
        (["--maintenance", "900"], "--maintenance 900 must be below --severe"),
    ],
)
def test_bad_threshold_options_are_one_line_and_exit_2(options, phrase, tiny_bundle, tiny_corpus):
    clip = str(sorted((tiny_corpus / "test").glob("*normal*"))[0])
    proc = cli("predict", clip, "--bundle", str(tiny_bundle), *options, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(_error_lines(proc)) == 1 and phrase in _error_lines(proc)[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_usage_error_is_one_line_from_the_real_process(tiny_corpus):
    clip = str(sorted((tiny_corpus / "test").glob("*normal*"))[0])
    proc = run("predict", clip, "--severe", "nan", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: predict: argument --severe: 'nan': a threshold is a number above 0 and at most 1000"
    ]


def test_a_hostile_calibration_file_is_one_line_and_exit_2(
    tiny_bundle, tiny_corpus, tiny_calibration, hostile_calibration, tmp_path
):
    clip = str(sorted((tiny_corpus / "test").glob("*normal*"))[0])
    path = hostile_calibration(tiny_calibration, tmp_path / "huge.npz", meta={"thresholds": {"maintenance": 1, "severe": 1e307}})
    proc = cli("predict", clip, "--bundle", str(tiny_bundle), "--calibration", str(path), check=False)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert _error_lines(proc) == [
        "error: huge.npz: not a usable calibration: its thresholds (1, 1e+307) are not 0 < maintenance < severe "
        "<= 1000; calibrate again"
    ]


def test_calibrate_refuses_an_output_folder_that_does_not_exist(tiny_bundle, tiny_corpus, tmp_path):
    normals = sorted((tiny_corpus / "train").glob("*source*"))[:3]
    out = tmp_path / "no_such_folder" / "cal.npz"
    proc = cli("calibrate", *map(str, normals), "--bundle", str(tiny_bundle), "--out", str(out), check=False)
    assert proc.returncode == 2 and not out.parent.exists()
    assert _error_lines(proc) == [f"error: --out {out}: the folder {out.parent} does not exist"]


def _hour_long_header(path: Path) -> Path:
    """A WAV of one hour of 48 kHz stereo, as far as its header and size go (a sparse file: no disk used)."""
    import struct

    frames = 48000 * 3600
    size = frames * 2 * 2
    header = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 2, 48000, 48000 * 4, 4, 16)
    with open(path, "wb") as fh:
        fh.write(header + b"data" + struct.pack("<I", size))
        fh.truncate(44 + size)
    return path


def test_predict_applies_the_apps_limits_and_goes_on_after_a_bomb(tiny_bundle, tiny_corpus, tmp_path):
    good = sorted((tiny_corpus / "test").glob("*.wav"))[:2]
    bomb = _hour_long_header(tmp_path / "bomb.wav")
    proc = cli("predict", str(good[0]), str(bomb), str(good[1]), "--bundle", str(tiny_bundle), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(good[0]), str(good[1])]
    assert _error_lines(proc) == [f"error: {bomb}: the recording is 3600.0 s long; at most 120 s can be scored"]


def test_no_limits_reads_a_recording_longer_than_the_apps_limit(tiny_bundle, tmp_path):
    from anomaly.synth import synthesize_clip

    wave, _ = synthesize_clip("source", "normal", 3, duration_s=10.0, sr=32000)
    long = tmp_path / "long.flac"
    sf.write(long, np.tile(wave, 13), 32000)  # 130 s
    limited = cli("predict", str(long), "--bundle", str(tiny_bundle), check=False)
    assert limited.returncode == 1 and "130.0 s long; at most 120 s" in _error_lines(limited)[0]
    scored = json.loads(cli("predict", str(long), "--bundle", str(tiny_bundle), "--json", "--no-limits").stdout)
    assert scored["label"] in VERDICTS and len(scored["windows"]) > 120


def test_a_truncated_recording_is_scored_with_a_note(tiny_bundle, tmp_path):
    from anomaly.synth import synthesize_clip

    wave, _ = synthesize_clip("source", "normal", 4, duration_s=10.0, sr=16000)
    whole = tmp_path / "whole.wav"
    sf.write(whole, wave, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + int(3.3 * 16000) * 2])
    scored = json.loads(cli("predict", str(cut), "--bundle", str(tiny_bundle), "--json").stdout)
    assert scored["notes"][0] == (
        "The file is cut short: its header promises 10.0 s, only 3.3 s were there to read and score."
    )
