"""``score-archive`` (anomaly/archive*.py): a synthetic plant archive scored on real Dask clusters.

About 300 short synthetic recordings in three folders, two calibrations fitted by the real ``calibrate``
command (one found as a folder's ``calibration.npz``, one named in a manifest), the third folder on the
bundled (tiny) model, and five bad files. One run goes through a separate ``dask scheduler`` and ``dask
worker`` process (``--scheduler``); another, on the default local cluster, is killed midway and resumed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from test_cli import cli  # the CLI in this process, as the CLI tests run it

from anomaly.archive_folder import Rule, read_manifest, walk_audio
from anomaly.archive_table import COLUMN_NAMES
from anomaly.archive_worker import model_sha256
from anomaly.bundle import load_bundle, sha256_file
from anomaly.decoding import AUDIO_EXTENSIONS
from anomaly.scoring import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
PER_FOLDER = 100
SR = 16000
LINE2_SR = 22050  # the bundled-model folder is recorded at another rate: the table gives each file's own
BAD = {  # file -> words its error row must hold
    "line1/pump_a/empty.wav": "the file is empty",
    "line1/pump_b/notes.wav": "not a readable audio file",
    "line2/truncated.wav": "not a readable audio file",
    "line2/2026-11/silence.flac": "silent",
    "line1/pump_a/2026-11/short.wav": "0.20 s long",
}


def run_archive(*args: str) -> SimpleNamespace:
    """``python -m anomaly ARGS`` in a process of its own, as a user runs it: a Dask client or local cluster
    in the test process would leave its threads behind for the tests that follow (the browser tests)."""
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly", *args],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def summary(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clip(seed: int, *, sr: int = SR, seconds: float = 1.0) -> np.ndarray:
    from anomaly.synth import synthesize_clip

    label = "anomaly" if seed % 4 == 3 else "normal"
    wave, _ = synthesize_clip("source", label, seed, sr=sr, duration_s=seconds)
    return wave


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_bundle) -> SimpleNamespace:
    """The archive below ``root``, its manifest and its two calibrations."""
    work = tmp_path_factory.mktemp("archive")
    root = work / "plant"
    folders = {"line1/pump_a": SR, "line1/pump_b": SR, "line2": LINE2_SR}
    seed = 0
    for folder, sr in folders.items():
        for i in range(PER_FOLDER):
            # A subfolder of each: the nearest calibration.npz above a file is the one that counts.
            sub = root / folder / ("2026-11" if i % 3 == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            sf.write(sub / f"rec_{i:03d}.wav", _clip(seed, sr=sr), sr, subtype="PCM_16")
            seed += 1
    (root / BAD_PATH("empty")).write_bytes(b"")
    (root / BAD_PATH("notes")).write_text("not audio, a note renamed to .wav\n" * 20)
    buffer = io.BytesIO()
    sf.write(buffer, _clip(999), SR, format="WAV", subtype="PCM_16")
    (root / BAD_PATH("truncated")).write_bytes(buffer.getvalue()[:30])
    sf.write(root / BAD_PATH("silence"), np.zeros(SR), SR, format="FLAC")
    sf.write(root / BAD_PATH("short"), _clip(998)[: SR // 5], SR, subtype="PCM_16")
    (root / "line1/pump_a/readme.txt").write_text("not audio: not walked")
    (root / ".trash").mkdir()
    sf.write(root / ".trash/old.wav", _clip(997), SR)  # hidden: not walked

    calibrations = {}
    for name, seed0 in (("Pump A", 5000), ("Pump B", 6000)):
        normals = work / f"normals_{name[-1]}"
        normals.mkdir()
        for i in range(10):
            sf.write(normals / f"n_{i}.wav", _clip(seed0 + 4 * i, seconds=2.0), SR, subtype="PCM_16")
        out = work / f"cal_{name[-1]}.npz"
        cli("calibrate", str(normals), "--out", str(out), "--name", name, "--bundle", str(tiny_bundle))
        calibrations[name] = out
    # Pump A's: the default, a calibration.npz in its folder. Pump B's: named by a manifest.
    shutil.copyfile(calibrations["Pump A"], root / "line1/pump_a/calibration.npz")
    (work / "cal").mkdir()
    shutil.copyfile(calibrations["Pump B"], work / "cal/pump_b.npz")
    manifest = work / "calibrations.toml"
    manifest.write_text('[calibrations]\n"line1/pump_b" = "cal/pump_b.npz"\n"line2/*" = "bundled"\n')
    return SimpleNamespace(root=root, work=work, manifest=manifest, bundle=tiny_bundle)


def BAD_PATH(stem: str) -> str:  # noqa: N802 - reads as the constant it looks up
    return next(path for path in BAD if Path(path).stem == stem)


def archive_args(archive, out: Path, *extra: str) -> list[str]:
    return [
        "score-archive",
        str(archive.root),
        "--out",
        str(out),
        "--manifest",
        str(archive.manifest),
        "--bundle",
        str(archive.bundle),
        *extra,
    ]


def expected_files(archive) -> list[str]:
    """Every audio file below the root but the hidden one, by path."""
    rels = (p.relative_to(archive.root).as_posix() for p in archive.root.rglob("*"))
    return sorted(r for r in rels if r.endswith((".wav", ".flac")) and not r.startswith("."))


@pytest.fixture(scope="module")
def scheduler(archive, tmp_path_factory):
    """A separate ``dask scheduler`` and a ``dask worker`` process (2 worker processes of one thread each)
    on 127.0.0.1, as on a real cluster; its address."""
    work = tmp_path_factory.mktemp("cluster")
    address_file = work / "scheduler.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    dask = [sys.executable, "-m", "dask"]
    logs = [open(work / "scheduler.log", "w"), open(work / "worker.log", "w")]  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(address_file)],
            cwd=work,
            env=env,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address_file.is_file(), (work / "scheduler.log").read_text()
        address = json.loads(address_file.read_text())["address"]
        processes.append(
            subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1"]
                + ["--no-dashboard", "--local-directory", str(work)],
                cwd=work,
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log_file in logs:
            log_file.close()


@pytest.fixture(scope="module")
def reference_run(archive, scheduler, tmp_path_factory) -> SimpleNamespace:
    """One uninterrupted run on the separate cluster, with a CSV copy."""
    out = tmp_path_factory.mktemp("reference") / "scores.parquet"
    proc = run_archive(*archive_args(archive, out, "--scheduler", scheduler, "--csv"))
    table = pq.read_table(out)
    return SimpleNamespace(out=out, proc=proc, arrow=table, table=table.to_pandas(), rows=table.to_pylist())


def test_separate_scheduler_scores_every_file_with_its_folders_calibration(
    archive, reference_run, tiny_detector
):
    table = reference_run.table
    files = expected_files(archive)
    assert len(files) == 3 * PER_FOLDER + len(BAD)
    assert list(table.columns) == list(COLUMN_NAMES)
    assert table["path"].tolist() == files  # every audio file once, sorted; hidden and non-audio ones not
    assert summary(reference_run.proc) | {"seconds": 0, "files_per_s": 0} == {
        "out": str(reference_run.out),
        "files": len(files),
        "already_scored": 0,
        "scored": len(files),
        "errors": len(BAD),
        "rows": len(files),
        "seconds": 0,
        "files_per_s": 0,
    }
    assert "scored 305/305 files (100%)" in reference_run.proc.stderr

    bundle = load_bundle(archive.bundle, source="local")
    cal_a = archive.root / "line1/pump_a/calibration.npz"
    cal_b = archive.work / "cal/pump_b.npz"
    expected = {
        "line1/pump_a/": ("Pump A", "line1/pump_a/calibration.npz", sha256_file(cal_a)),
        "line1/pump_b/": ("Pump B", str(cal_b.resolve()), sha256_file(cal_b)),
        "line2/": ("bundled model", "bundled", None),
    }
    detectors = {
        "line1/pump_a/": tiny_detector.with_calibration(tiny_detector.load_calibration(cal_a)),
        "line1/pump_b/": tiny_detector.with_calibration(tiny_detector.load_calibration(cal_b)),
        "line2/": tiny_detector,
    }
    for row in reference_run.rows:
        folder = next(f for f in expected if row["path"].startswith(f))
        machine, calibration, cal_sha = expected[folder]
        assert (row["machine"], row["calibration"], row["calibration_sha256"]) == expected[folder], row
        assert row["model_sha256"] == model_sha256(bundle)
        path = archive.root / row["path"]
        assert (row["size_bytes"], row["mtime_ns"]) == (path.stat().st_size, path.stat().st_mtime_ns)
        if row["path"] in BAD:
            assert BAD[row["path"]] in row["error"], row
            assert row["score"] is row["label"] is row["familiar"] is row["sample_rate"] is None, row
            continue
        assert row["error"] is None, row
        # The same answer as scoring the file alone, in this process, with that folder's calibration.
        alone = detectors[folder].analyze(path)
        assert row["score"] == pytest.approx(alone.score, rel=1e-4, abs=1e-5), row
        assert (row["label"], row["familiar"]) == (alone.label, alone.familiar), row
        assert row["label"] in VERDICTS
        assert row["percentile"] == pytest.approx(alone.percentile, abs=1e-6)
        assert row["duration_s"] == pytest.approx(1.0, abs=0.05)
        assert row["sample_rate"] == (LINE2_SR if folder == "line2/" else SR)

    # The two calibrations and the bundled model answer differently: the calibration did reach the workers.
    means = table.groupby("machine")["score"].mean()
    assert len({round(v, 3) for v in means}) == 3, means

    csv = (reference_run.out.with_suffix(".csv")).read_text().splitlines()
    assert csv[0].replace('"', "") == ",".join(COLUMN_NAMES)
    assert len(csv) == 1 + len(files)


def test_rerun_scores_only_new_or_changed_files_and_drops_removed_ones(archive, scheduler, tmp_path):
    root = tmp_path / "small"
    shutil.copytree(archive.root / "line2", root)
    out = tmp_path / "scores.parquet"

    def score() -> dict:
        return summary(
            run_archive(
                "score-archive", str(root), "--out", str(out), "--bundle", str(archive.bundle), "--scheduler", scheduler
            )
        )

    first = score()
    assert (first["scored"], first["rows"]) == (PER_FOLDER + 2, PER_FOLDER + 2)

    again = score()
    assert (again["already_scored"], again["scored"], again["rows"]) == (PER_FOLDER + 2, 0, PER_FOLDER + 2)

    changed = root / "rec_001.wav"
    sf.write(changed, _clip(4242, sr=LINE2_SR) * 0.5, LINE2_SR, subtype="PCM_16")
    (root / "rec_002.wav").unlink()
    shutil.copyfile(root / "rec_004.wav", root / "new.wav")
    before = pq.read_table(out).to_pandas().set_index("path")
    third = score()
    assert (third["scored"], third["rows"]) == (2, PER_FOLDER + 2)
    after = pq.read_table(out).to_pandas().set_index("path")
    assert "rec_002.wav" not in after.index and "new.wav" in after.index
    assert after.loc["new.wav", "score"] == pytest.approx(after.loc["rec_004.wav", "score"], rel=1e-4)
    assert after.loc["rec_001.wav", "score"] != before.loc["rec_001.wav", "score"]
    assert after.loc["rec_001.wav", "mtime_ns"] == changed.stat().st_mtime_ns


def test_an_unusable_calibration_makes_error_rows_and_the_rest_is_scored(archive, scheduler, tmp_path):
    root = tmp_path / "plant"
    for folder in ("good", "broken"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            sf.write(root / folder / f"r{i}.wav", _clip(300 + i), SR, subtype="PCM_16")
    (root / "broken/calibration.npz").write_bytes(b"PK\x03\x04 not a calibration")
    out = tmp_path / "scores.parquet"
    args = [
        "score-archive",
        str(root),
        "--out",
        str(out),
        "--bundle",
        str(archive.bundle),
        "--scheduler",
        scheduler,
    ]
    numbers = summary(run_archive(*args))
    assert (numbers["rows"], numbers["errors"]) == (6, 3)
    rows = pq.read_table(out).to_pylist()
    for row in rows:
        if row["path"].startswith("broken/"):
            assert row["error"].startswith("the calibration broken/calibration.npz cannot be used: "), row
            assert row["score"] is None and row["calibration"] == "broken/calibration.npz"
        else:
            assert row["error"] is None and row["calibration"] == "bundled" and row["score"] > 0


def _part_rows(out: Path) -> int:
    parts = out.with_name(out.name + ".parts")
    total = 0
    for part in parts.glob("part-*.parquet") if parts.is_dir() else []:
        total += pq.read_metadata(part).num_rows
    return total


def test_killed_local_run_resumes_with_only_the_rest_and_the_same_table(archive, reference_run, tmp_path):
    out = tmp_path / "killed" / "scores.parquet"
    args = archive_args(archive, out, "--workers", "2", "--files-per-task", "4", "--checkpoint-seconds", "0")
    total = len(expected_files(archive))
    run = subprocess.Popen(
        [sys.executable, "-m", "anomaly", *args],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its worker processes too
    )
    try:
        deadline = time.monotonic() + 180
        while _part_rows(out) < 40 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # a power cut: nothing gets to clean up
        _, err = run.communicate(timeout=60)
    kept = _part_rows(out)
    assert 40 <= kept < total, err.decode()[-3000:]
    assert not out.exists()  # the run never finished

    resumed = run_archive(*args[:-2])  # the default checkpoint interval
    numbers = summary(resumed)
    assert numbers["already_scored"] == kept
    assert numbers["scored"] == total - kept
    assert numbers["rows"] == total
    assert "local Dask cluster: 2 workers" in resumed.stderr
    assert not out.with_name(out.name + ".parts").exists()

    table = pq.read_table(out)
    reference = reference_run.arrow
    assert table.column("path").to_pylist() == reference.column("path").to_pylist()
    for column in COLUMN_NAMES:
        ours, theirs = table.column(column).to_pylist(), reference.column(column).to_pylist()
        if column in ("score", "percentile", "duration_s"):  # batches of other sizes: float rounding
            assert [v is None for v in ours] == [v is None for v in theirs], column
            np.testing.assert_allclose(
                [v for v in ours if v is not None],
                [v for v in theirs if v is not None],
                rtol=1e-4,
                atol=1e-5,
                err_msg=column,
            )
        else:
            assert ours == theirs, column


def test_walk_finds_every_audio_format_and_skips_hidden_and_other_files(tmp_path):
    for i, ext in enumerate(AUDIO_EXTENSIONS):
        folder = tmp_path / f"d{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}{ext.upper() if i % 2 else ext}").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden/a.wav").write_bytes(b"x")
    (tmp_path / "d0/.b.wav").write_bytes(b"x")
    found = list(walk_audio(tmp_path))
    assert len(found) == len(AUDIO_EXTENSIONS) == len({f.rel for f in found})
    assert {Path(f.rel).suffix.lower() for f in found} == set(AUDIO_EXTENSIONS)
    assert all((tmp_path / f.rel).samefile(f.path) and f.size_bytes == 1 for f in found)


def test_manifest_csv_and_toml_say_the_same_and_first_rule_wins(tmp_path):
    (tmp_path / "m.csv").write_text(
        "pattern,calibration\nline1/pump3,cal/p3.npz\nline1/*.flac,bundled\nline1,cal/l1.npz\n"
    )
    (tmp_path / "m.toml").write_text(
        '[calibrations]\n"line1/pump3" = "cal/p3.npz"\n"line1/*.flac" = "bundled"\n"line1" = "cal/l1.npz"\n'
    )
    rules = read_manifest(tmp_path / "m.csv")
    assert rules == read_manifest(tmp_path / "m.toml")
    assert rules[0] == Rule("line1/pump3", (tmp_path / "cal/p3.npz").resolve())

    def first(rel: str):
        return next((r.calibration for r in rules if r.matches(rel)), "default")

    assert first("line1/pump3/2026/a.flac") == (tmp_path / "cal/p3.npz").resolve()
    assert first("line1/pump4/a.flac") is None  # bundled: * crosses folders
    assert first("line1/pump4/a.wav") == (tmp_path / "cal/l1.npz").resolve()
    assert first("line1b/a.wav") == "default"  # a folder rule is not a prefix of a name
    (tmp_path / "bad.toml").write_text('[calibrations]\n"a" = 3\n')
    from anomaly.errors import BundleError

    with pytest.raises(BundleError, match="bad.toml"):
        read_manifest(tmp_path / "bad.toml")
