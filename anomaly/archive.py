"""Score a plant's archive: every recording below a folder, each against its own machine's calibration, on a
Dask cluster (a local one by default), into one Parquet table.

folder walk -> (file, calibration) -> tasks of a few files with one calibration -> a worker process (its
``Detector`` loaded once, ``Detector.analyze_many`` as everywhere else) -> rows -> Parquet parts -> one table.

Which calibration scores a file: the first rule of a manifest that matches it (``read_manifest``); else the
``calibration.npz`` of the nearest folder above it; else the bundled model.

This module runs the scoring on the cluster and starts the cluster; the folder walk and the calibration
plan live in ``archive_folder``, the task a worker runs in ``archive_worker``, the table and the progress
line in ``archive_table``.

The table is resumable. While a run is under way its rows land in part files beside ``--out`` (a folder
``OUT.parts``), each written whole or not at all, every ``checkpoint_s`` seconds; a run that dies keeps them.
A run that ends merges everything into ``--out`` (one row per file, sorted by path) and removes the parts.
A rerun scores only the files that have no row yet, or whose size, modification time, model or
calibration changed since their row was written.

Memory stays bounded whatever the archive's size: the folder is walked as a stream (twice: once to count,
once to submit), a few tasks per worker are in flight at a time, and rows are written as they arrive. What
grows with the archive is one small key per file (to resume and to drop files that are gone) and the final
merge, a few hundred bytes per file.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from anomaly.archive_folder import CalibrationPlan, Choice, Found, Rule, walk_audio
from anomaly.archive_table import CHECKPOINT_S, COLUMN_NAMES, Progress, ScoreTable
from anomaly.archive_worker import (
    MAX_SECONDS,
    model_sha256,
    score_files,
    warm_up_worker,
    worker_cpu_s,
    worker_peak_rss_mb,
)
from anomaly.bundle import Bundle
from anomaly.errors import AudioInputError, ClusterError, GearboxError

# The run and the cluster, and the worker functions the benchmark runs on every worker through this module.
__all__ = [
    "FILES_PER_TASK",
    "Summary",
    "dashboard_link",
    "dask_client",
    "dask_setup",
    "model_sha256",
    "score_archive",
    "warm_up_worker",
    "worker_cpu_s",
    "worker_peak_rss_mb",
]

log = logging.getLogger("anomaly")

FILES_PER_TASK = 16  # 10 s clips: about 0.1 s of one core per task, so Dask's per-task cost stays small


# --- the run -----------------------------------------------------------------------------------------------


@dataclass
class Summary:
    out: str
    files: int  # audio files found
    already_scored: int
    scored: int  # by this run
    errors: int  # error rows written by this run
    rows: int  # in the final table
    seconds: float  # scoring only: from the first task submitted to the last row received
    files_per_s: float

    def to_json(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def score_archive(
    root: str | Path,
    out: str | Path,
    client,
    *,
    bundle: Bundle,
    rules: Sequence[Rule] = (),
    csv_path: str | Path | None = None,
    files_per_task: int = FILES_PER_TASK,
    checkpoint_s: float = CHECKPOINT_S,
    max_seconds: float | None = MAX_SECONDS,
    retry_errors: bool = False,
    progress: Callable[[int], Progress] | None = None,
) -> Summary:
    """Score every audio file below ``root`` that ``out`` does not hold yet on the Dask ``client``'s cluster,
    and write the table (see the module's docstring)."""
    from distributed import KilledWorker, as_completed

    root = Path(root).resolve()
    if not root.is_dir():
        raise AudioInputError(str(root), "no such folder")
    table = ScoreTable(out, checkpoint_s=checkpoint_s)
    plan = CalibrationPlan(root, bundle, list(rules))
    model = model_sha256(bundle)
    done = table.scored()

    def needs_scoring(found: Found, choice: Choice) -> bool:
        before = done.get(found.rel)
        if before is None or (retry_errors and before[4]):
            return True
        return before[:4] != (found.size_bytes, found.mtime_ns, model, choice.sha256)

    # First pass: count (for the progress line) and note which files are present (the table keeps only them).
    present: set[str] = set()
    total = 0
    for found in walk_audio(root):
        present.add(found.rel)
        total += needs_scoring(found, plan.choice(found.rel))
    already = len(present) - total
    log.info("%d audio files below %s: %d already scored, %d to score", len(present), root, already, total)

    def tasks() -> Iterator[tuple[Choice, list[Found]]]:
        """Second pass: the files to score, in groups of up to ``files_per_task`` sharing a calibration."""
        group: list[Found] = []
        current: Choice | None = None
        for found in walk_audio(root):
            choice = plan.choice(found.rel)
            if not needs_scoring(found, choice):
                continue
            if group and (choice is not current or len(group) >= files_per_task):
                yield current, group
                group = []
            current = choice
            group.append(found)
        if group:
            yield current, group

    def rows_of(choice: Choice, found: list[Found], scored: list[dict]) -> list[dict]:
        return [
            dict.fromkeys(COLUMN_NAMES)
            | row
            | {
                "path": f.rel,
                "machine": choice.machine,
                "calibration": choice.shown,
                "size_bytes": f.size_bytes,
                "mtime_ns": f.mtime_ns,
                "model_sha256": model,
                "calibration_sha256": choice.sha256,
            }
            for f, row in zip(found, scored, strict=True)
        ]

    shown = progress(total) if progress else Progress(total)
    scored = errors = 0
    started = time.monotonic()
    pending = tasks()
    in_flight: dict = {}
    flying = as_completed()

    def record(rows: list[dict]) -> None:
        nonlocal scored, errors
        failed = sum(row["error"] is not None for row in rows)
        table.add(rows)
        scored += len(rows)
        errors += failed
        shown.update(len(rows), failed)

    def submit(choice: Choice, found: list[Found]) -> None:
        files = [(f.path, f.rel) for f in found]
        future = client.submit(
            score_files, str(bundle.path), model, choice.path, choice.sha256, files, max_seconds, pure=False
        )
        in_flight[future] = (choice, found)
        flying.add(future)

    def submit_next() -> bool:
        for choice, found in pending:
            if choice.problem:  # no worker needed: every file of an unusable calibration is an error row
                record(rows_of(choice, found, [{"error": choice.problem}] * len(found)))
                continue
            submit(choice, found)
            return True
        return False

    def collect(stop: threading.Event) -> None:
        """Keep a few tasks per worker in flight and record each one's rows as it finishes."""
        limit = _in_flight_limit(client)
        while len(in_flight) < limit and submit_next():
            pass
        for future in flying:
            choice, found = in_flight.pop(future)
            try:
                result = future.result()
            except KilledWorker as exc:  # the worker process died (crashed, or out of memory) each time
                if len(found) > 1:  # each file alone: only the one that kills a worker becomes an error row
                    for f in found:
                        submit(choice, [f])
                    continue
                log.debug("worker died: %s", exc)
                problem = (
                    "a worker process died each time it scored this file (a crash in a decoder, or more "
                    "memory than a worker has: see --max-seconds)"
                )
                result = [{"error": problem}]
            except GearboxError:  # the worker's model or a calibration is not the one checked here
                raise
            except Exception as exc:  # noqa: BLE001 - the same on every task: stop rather than fill the table
                raise ClusterError(
                    f"the workers cannot score ({type(exc).__name__}: {str(exc)[:500]}); is this project "
                    "installed on every worker?"
                ) from None
            record(rows_of(choice, found, result))
            future.release()
            if stop.is_set():
                raise KeyboardInterrupt
            while len(in_flight) < limit and submit_next():
                pass

    try:
        with _stop_on_signal() as stop:
            collect(stop)
    except KeyboardInterrupt:
        table.flush()
        log.warning("stopped: the %d files scored are kept beside %s; the same command goes on", scored, out)
        raise
    finally:
        for future in in_flight:
            future.cancel()
        table.flush()  # a stopped or failed run keeps every row it received
    seconds = time.monotonic() - started
    shown.update(0, 0, final=True)
    rows = table.finish(present, Path(csv_path) if csv_path else None)
    return Summary(
        out=str(out),
        files=len(present),
        already_scored=already,
        scored=scored,
        errors=errors,
        rows=rows,
        seconds=seconds,
        files_per_s=scored / seconds if seconds > 0 else 0.0,
    )


@contextmanager
def _stop_on_signal():
    """Ctrl-C (SIGINT) or SIGTERM stops the run when the next task finishes, so that it never breaks off
    inside Dask; a second Ctrl-C stops it at once. Yields the event that says a stop was asked for."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def asked(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        log.warning("stopping when the next task finishes (Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, asked) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def dask_setup(worker) -> None:
    """Dask's preload hook for the local cluster's worker processes: Ctrl-C on a terminal reaches every
    process of the group; the command stops its workers itself, cleanly."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _in_flight_limit(client) -> int:
    """Tasks submitted at a time: enough to keep every worker thread busy while results travel back, few
    enough that memory does not grow with the archive."""
    threads = sum(client.nthreads().values())
    return max(4, 3 * threads)


# --- the cluster -------------------------------------------------------------------------------------------

# Set in each local worker's environment before it starts (TensorFlow reads them at start-up); workers of an
# existing cluster get the same limits from ``_one_thread_tensorflow``.
WORKER_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


@contextmanager
def dask_client(
    scheduler: str | None = None, *, workers: int | None = None, dashboard: bool = True, quiet: bool = True
):
    """A ``distributed.Client`` of the scheduler at ``scheduler``, or of a ``LocalCluster`` of ``workers``
    processes (default: one per core) with one thread each, closed afterwards. ``quiet``: Dask's own
    notices of workers starting and stopping are not logged (they would bury the progress line)."""
    import importlib.util

    from distributed import Client, LocalCluster

    if quiet:  # after the import: importing distributed sets its loggers' levels
        logging.getLogger("distributed").setLevel(logging.ERROR)

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"the Dask scheduler at {scheduler} cannot be reached ({exc})") from None
        try:
            try:
                client.wait_for_workers(1, timeout=120)
            except TimeoutError:
                raise ClusterError(
                    f"no worker joined the Dask scheduler at {scheduler} within 120 s"
                ) from None
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        # Without bokeh the dashboard would only ask for it: no need to take the usual port (any port will do
        # for the scheduler's own HTTP routes).
        dashboard_address=":8787" if dashboard and importlib.util.find_spec("bokeh") else ":0",
        silence_logs=logging.ERROR,
        env=WORKER_ENV,
        preload=["anomaly.archive"],  # its dask_setup: workers leave Ctrl-C to the command
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def dashboard_link(client, *, local: bool) -> str | None:
    """The Dask dashboard's address when one is running. Without ``bokeh`` a scheduler serves only a page
    asking for it: a local cluster's link is then left out (a remote scheduler may well have it)."""
    import importlib.util

    if local and importlib.util.find_spec("bokeh") is None:
        return None
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - only a courtesy
        return None
