"""What a Dask worker process runs for ``score-archive``: files scored against one calibration, into rows.

Each worker process loads the network once (``worker_detector``) and shares it between calibrations; a task
(``score_files``) goes through ``Detector.analyze_many`` as the Batch tab and ``predict`` do.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from anomaly.bundle import Bundle, load_bundle, sha256_file
from anomaly.calibration import load_calibration
from anomaly.errors import AudioInputError, BundleError

MAX_SECONDS = 600.0  # longer recordings are error rows (--max-seconds): a worker's memory stays bounded


def model_sha256(bundle: Bundle) -> str:
    """One checksum of the model: over the sha256 of every bundle file (config.json's ``files``), so that
    it changes when the network, the scorer or the thresholds change."""
    return hashlib.sha256(json.dumps(bundle.config["files"], sort_keys=True).encode()).hexdigest()


_DETECTORS: dict[tuple, object] = {}
_DETECTORS_LOCK = threading.Lock()
MAX_CACHED_CALIBRATIONS = 64


def _one_thread_tensorflow() -> None:
    """Each worker process runs one task at a time on one core; TensorFlow's own thread pools would make
    two workers on two cores fight over them. Must run before TensorFlow's first operation here."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran in this process: its pools are fixed
        pass


def worker_detector(
    bundle_dir: str, model_sha: str, calibration: str | None = None, calibration_sha: str | None = None
):
    """This process's ``Detector`` for a model and calibration, loaded on first use and kept: one network per
    worker process, shared by every calibration (``Detector.with_calibration``)."""
    from anomaly.detector import Detector

    with _DETECTORS_LOCK:
        base = _DETECTORS.get((bundle_dir, model_sha))
        if base is None:
            _one_thread_tensorflow()
            bundle = load_bundle(bundle_dir, source="local", revision=None)
            if model_sha256(bundle) != model_sha:
                raise BundleError(f"{bundle_dir}: this worker's model is not the one the run started with")
            base = Detector(bundle)
            _DETECTORS[(bundle_dir, model_sha)] = base
        if calibration is None:
            return base
        key = (bundle_dir, model_sha, calibration, calibration_sha)
        detector = _DETECTORS.get(key)
        if detector is None:
            if sha256_file(calibration) != calibration_sha:
                raise BundleError(f"{calibration}: the calibration file changed while the run was under way")
            if len(_DETECTORS) > MAX_CACHED_CALIBRATIONS:
                for old in [k for k in _DETECTORS if len(k) > 2][: len(_DETECTORS) // 2]:
                    del _DETECTORS[old]
            detector = base.with_calibration(load_calibration(calibration, base.bundle))
            _DETECTORS[key] = detector
        return detector


def result_row(result) -> dict:
    """The scoring columns of one ``Detector.analyze_many`` result (an ``Analysis`` or an ``AudioInputError``)."""
    if isinstance(result, AudioInputError):
        return {"error": result.problem}
    return {
        "score": float(result.score),
        "percentile": float(result.percentile),
        "label": result.label,
        "familiar": bool(result.familiar),
        "duration_s": float(result.duration_s),
    }


def score_files(
    bundle_dir: str,
    model_sha: str,
    calibration: str | None,
    calibration_sha: str | None,
    files: list[tuple[str, str]],
    max_seconds: float | None = MAX_SECONDS,
) -> list[dict]:
    """The task each worker runs: score ``files`` (absolute path, name for messages) against one calibration,
    through ``Detector.analyze_many`` like the Batch tab and ``predict``; one row of scoring columns each."""
    from anomaly.decoding import native_sample_rate

    detector = worker_detector(bundle_dir, model_sha, calibration, calibration_sha)
    paths = [path for path, _ in files]
    names = [name for _, name in files]
    try:
        results = detector.analyze_many(paths, names=names, max_seconds=max_seconds, workers=1)
    except Exception:  # noqa: BLE001 - something no input check foresaw: file by file, so only it fails
        results = []
        for path, name in files:
            try:
                results.extend(
                    detector.analyze_many([path], names=[name], max_seconds=max_seconds, workers=1)
                )
            except Exception as exc:  # noqa: BLE001
                results.append(AudioInputError(name, f"could not be scored ({type(exc).__name__}: {exc})"))
    rows = []
    for path, result in zip(paths, results, strict=True):
        row = result_row(result)
        if "error" not in row:
            row["sample_rate"] = native_sample_rate(path)
        rows.append(row)
    return rows


def worker_peak_rss_mb() -> float | None:
    """Peak resident memory of this process (for ``Client.run`` on every worker)."""
    from anomaly.measure import process_memory_mb

    return process_memory_mb(os.getpid(), "VmHWM")


def worker_cpu_s() -> float:
    """CPU seconds this process has used (for ``Client.run`` on every worker)."""
    times = os.times()
    return times.user + times.system


def warm_up_worker(bundle_dir: str, model_sha: str, clip: str) -> bool:
    """Load this worker's model and score one clip (the benchmark times scoring, not start-up)."""
    score_files(bundle_dir, model_sha, None, None, [(clip, Path(clip).name)])
    return True
