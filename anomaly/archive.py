"""Score a plant's archive: every recording below a folder, each against its own machine's calibration, on a
Dask cluster (a local one by default), into one Parquet table.

folder walk -> (file, calibration) -> tasks of a few files with one calibration -> a worker process (its
``Detector`` loaded once, ``Detector.analyze_many`` as everywhere else) -> rows -> Parquet parts -> one table.

Which calibration scores a file: the first rule of a manifest that matches it (``read_manifest``); else the
``calibration.npz`` of the nearest folder above it; else the bundled model.

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

import csv
import fnmatch
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anomaly.bundle import Bundle, load_bundle, sha256_file
from anomaly.calibration import load_calibration
from anomaly.errors import AudioInputError, BundleError, ClusterError, GearboxError

log = logging.getLogger("anomaly")

CALIBRATION_FILE = "calibration.npz"  # in a folder: the calibration of every recording below it
BUNDLED = "bundled"  # in a manifest, and in the table's calibration column: the bundled model's own
FILES_PER_TASK = 16  # 10 s clips: about 0.1 s of one core per task, so Dask's per-task cost stays small
CHECKPOINT_S = 30.0
MAX_SECONDS = 600.0  # longer recordings are error rows (--max-seconds): a worker's memory stays bounded
PART_ROWS = 20_000  # rows per part file at most, whatever the checkpoint interval

# The table, one row per file. Scores, label, familiar, duration and sample rate are null on error rows.
COLUMNS = (
    ("path", "string"),  # relative to the archive's root, with /
    ("machine", "string"),  # the calibration's name, its folder, its file name, or "bundled model"
    ("calibration", "string"),  # the calibration file (relative to the root when inside it), or "bundled"
    ("score", "float64"),
    ("percentile", "float64"),
    ("label", "string"),
    ("familiar", "bool_"),
    ("duration_s", "float64"),
    ("sample_rate", "int32"),  # the file's own, before resampling to the model's
    ("error", "string"),  # why the file could not be scored; null when it was
    ("size_bytes", "int64"),
    ("mtime_ns", "int64"),
    ("model_sha256", "string"),
    ("calibration_sha256", "string"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
RESUME_COLUMNS = ("path", "size_bytes", "mtime_ns", "model_sha256", "calibration_sha256", "error")


def schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


def model_sha256(bundle: Bundle) -> str:
    """One checksum of the model: over the sha256 of every bundle file (config.json's ``files``), so that
    it changes when the network, the scorer or the thresholds change."""
    return hashlib.sha256(json.dumps(bundle.config["files"], sort_keys=True).encode()).hexdigest()


# --- the folder ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """An audio file found below the root."""

    path: str  # absolute
    rel: str  # relative to the root, with /
    size_bytes: int
    mtime_ns: int


def walk_audio(root: str | Path) -> Iterator[Found]:
    """Every audio file below ``root`` (``anomaly.features.AUDIO_EXTENSIONS``), as a stream: one folder's
    entries at a time, subfolders in name order. Hidden files and folders (a leading dot) are skipped, and
    symbolic links to folders are not followed (no loops)."""
    from anomaly.decoding import AUDIO_EXTENSIONS

    root = Path(root)
    pending = [(str(root), "")]
    while pending:
        folder, prefix = pending.pop()
        subfolders = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subfolders.append(entry.name)
                        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS:
                            stat = entry.stat()
                            yield Found(entry.path, prefix + entry.name, stat.st_size, stat.st_mtime_ns)
                    except OSError as exc:  # a file removed or unreadable while walking
                        log.warning("skipping %s: %s", prefix + entry.name, exc.strerror or exc)
        except OSError as exc:
            log.warning("skipping the folder %s: %s", prefix or root, exc.strerror or exc)
            continue
        pending.extend(
            (os.path.join(folder, name), f"{prefix}{name}/") for name in sorted(subfolders, reverse=True)
        )


# --- which calibration scores which file ---------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One manifest line: files matching ``pattern`` are scored with ``calibration`` (None: the bundled model).

    A pattern with ``*``, ``?`` or ``[`` is a glob over the path relative to the root (``*`` also crosses
    folders: ``pump3/*.wav`` takes ``pump3/2026/a.wav`` too); any other pattern is a folder (every file below
    it) or one file.
    """

    pattern: str
    calibration: Path | None

    def matches(self, rel: str) -> bool:
        pattern = self.pattern.strip("/")
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(rel, pattern)
        return rel == pattern or rel.startswith(pattern + "/") or pattern in ("", ".")


def read_manifest(path: str | Path) -> list[Rule]:
    """Rules from a CSV (columns ``pattern`` and ``calibration``) or TOML (a ``[calibrations]`` table of
    ``"pattern" = "file"``) manifest, in order: the first rule that matches a file wins. A calibration is a
    file (relative paths from the manifest's folder) or ``bundled`` for the bundled model.

    Examples
    --------
    >>> # calibrations.toml
    >>> # [calibrations]
    >>> # "line1/pump3" = "cal/pump3.npz"
    >>> # "line2/*.flac" = "bundled"
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path.name}: the manifest cannot be read ({exc})") from None
    pairs: list[tuple[str, str]] = []
    if path.suffix.lower() == ".toml":
        try:
            table = tomllib.loads(text).get("calibrations")
        except tomllib.TOMLDecodeError as exc:
            raise BundleError(f"{path.name}: not valid TOML ({exc})") from None
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise BundleError(f'{path.name}: needs a [calibrations] table of "pattern" = "calibration file"')
        pairs = list(table.items())
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not {"pattern", "calibration"} <= set(reader.fieldnames or ()):
            raise BundleError(f"{path.name}: needs the columns pattern and calibration")
        pairs = [(row["pattern"] or "", row["calibration"] or "") for row in reader]
    else:
        raise BundleError(f"{path.name}: a manifest is a .csv or a .toml file")
    rules = []
    for pattern, calibration in pairs:
        calibration = calibration.strip()
        if not pattern.strip() or not calibration:
            raise BundleError(f"{path.name}: every rule needs a pattern and a calibration ({pattern!r})")
        target = None if calibration.lower() == BUNDLED else (path.parent / calibration).resolve()
        rules.append(Rule(pattern.strip(), target))
    return rules


@dataclass(frozen=True)
class Choice:
    """The calibration that scores a set of files, checked once against the model."""

    path: str | None  # absolute; None: the bundled model
    shown: str  # the table's calibration column
    machine: str
    sha256: str | None
    problem: str | None = None  # why it cannot be used: its files become error rows


class CalibrationPlan:
    """Which calibration scores each file (``choice``), each calibration read and checked once."""

    def __init__(self, root: Path, bundle: Bundle, rules: Sequence[Rule] = ()):
        self.root = root
        self.bundle = bundle
        self.rules = list(rules)
        self._folder_default: dict[str, Path | None] = {}
        self._choices: dict[Path | None, Choice] = {}

    def choice(self, rel: str) -> Choice:
        for rule in self.rules:
            if rule.matches(rel):
                return self._checked(rule.calibration, from_manifest=True)
        return self._checked(self._nearest(str(PurePosixPath(rel).parent)), from_manifest=False)

    def _nearest(self, folder: str) -> Path | None:
        """The ``calibration.npz`` of ``folder`` or of the nearest folder above it (None: there is none)."""
        folder = "" if folder == "." else folder
        if folder not in self._folder_default:
            own = self.root / folder / CALIBRATION_FILE
            if own.is_file():
                self._folder_default[folder] = own
            else:
                parent = str(PurePosixPath(folder).parent) if folder else None
                self._folder_default[folder] = None if parent is None else self._nearest(parent)
        return self._folder_default[folder]

    def _checked(self, path: Path | None, *, from_manifest: bool) -> Choice:
        if path in self._choices:
            return self._choices[path]
        if path is None:
            choice = Choice(None, BUNDLED, "bundled model", None)
        else:
            try:
                shown = path.relative_to(self.root).as_posix()
            except ValueError:
                shown = str(path)
            # Unnamed: a folder's own calibration is called after the folder, a manifest's after its file.
            if from_manifest:
                fallback = path.stem
            else:
                fallback = str(PurePosixPath(shown).parent)
                fallback = self.root.name if fallback == "." else fallback
            try:
                calibration = load_calibration(path, self.bundle)
                sha = sha256_file(path)
                choice = Choice(str(path), shown, calibration.meta.get("name") or fallback, sha)
            except (GearboxError, OSError) as exc:
                problem = f"the calibration {shown} cannot be used: {exc}"
                log.warning("%s; its files are error rows", problem)
                choice = Choice(str(path), shown, fallback, None, problem)
        self._choices[path] = choice
        return choice


# --- in a worker process ---------------------------------------------------------------------------------

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


# --- the table -------------------------------------------------------------------------------------------


class ScoreTable:
    """The ``--out`` Parquet file, and the part files (``OUT.parts/``) a run writes as it goes."""

    def __init__(self, out: str | Path, *, checkpoint_s: float = CHECKPOINT_S):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.checkpoint_s = checkpoint_s
        self._rows: list[dict] = []
        self._last_flush = time.monotonic()
        self._run = f"{time.time_ns():020d}"
        self._seq = 0

    def _files(self) -> list[Path]:
        """The finished table first, then the parts in the order they were written: later rows win."""
        parts = sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []
        return ([self.out] if self.out.is_file() else []) + parts

    def _read(self, path: Path, columns=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise BundleError(f"{path}: not a table of score-archive ({exc}); choose another --out") from None

    def scored(self) -> dict[str, tuple]:
        """What is already scored: path -> (size, mtime, model, calibration, failed)."""
        done: dict[str, tuple] = {}
        for path in self._files():
            table = self._read(path, columns=list(RESUME_COLUMNS))
            columns = [table.column(name).to_pylist() for name in RESUME_COLUMNS]
            for rel, size, mtime, model, cal, error in zip(*columns, strict=True):
                done[rel] = (size, mtime, model, cal, error is not None)
        return done

    def add(self, rows: list[dict]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= PART_ROWS or time.monotonic() - self._last_flush >= self.checkpoint_s:
            self.flush()

    def flush(self) -> None:
        """Write the rows received so far as one part file, whole or not at all (a temporary name, then a
        rename): a run killed at any moment keeps every part it finished."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._last_flush = time.monotonic()
        if not self._rows:
            return
        self.parts.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._rows, schema=schema())
        final = self.parts / f"part-{self._run}-{self._seq:06d}.parquet"
        temporary = final.with_suffix(".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self._seq += 1
        self._rows.clear()

    def finish(self, present: set[str] | None, csv_path: Path | None = None) -> int:
        """Merge the finished table and the parts into ``out``: the latest row of each file still present,
        sorted by path; remove the parts; also write ``csv_path`` if given. Returns the number of rows."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        self.flush()
        files = self._files()
        tables = [self._read(path).cast(schema()) for path in files]
        table = pa.concat_tables(tables) if tables else schema().empty_table()
        # The last row of each path: tables were concatenated oldest first.
        order = pa.array(range(table.num_rows), pa.int64())
        table = table.append_column("_order", order)
        latest = table.group_by("path").aggregate([("_order", "max")]).column("_order_max")
        table = table.take(latest).drop_columns(["_order"])
        if present is not None:
            table = table.filter(
                pc.is_in(table.column("path"), value_set=pa.array(sorted(present), pa.string()))
            )
        table = table.sort_by("path")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.out.with_name(self.out.name + ".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, self.out)
        if self.parts.is_dir():
            for part in self.parts.iterdir():
                if part.name.startswith("part-"):
                    part.unlink()
            try:
                self.parts.rmdir()
            except OSError:
                pass  # something else was put there: left alone
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            pa_csv.write_csv(table, csv_path)
        return table.num_rows


# --- progress ----------------------------------------------------------------------------------------------


class Progress:
    """Files done of the total, files per second and errors so far: one line rewritten in place on a
    terminal, a log line every ``every_s`` seconds otherwise."""

    def __init__(self, total: int, *, stream=None, every_s: float = 10.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.25 if self.tty else every_s
        self.started = time.monotonic()
        self._shown = 0.0
        self._last = ""
        self.done = 0
        self.errors = 0

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = ""
        if rate > 0 and self.done < self.total:
            left = (self.total - self.done) / rate
            eta = f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
        return (
            f"scored {self.done:,}/{self.total:,} files ({pct:.0f}%), {rate:.1f} files/s, "
            f"{self.errors:,} errors{eta}"
        )

    def update(self, done: int, errors: int, *, final: bool = False) -> None:
        self.done += done
        self.errors += errors
        now = time.monotonic()
        if not final and now - self._shown < self.every_s:
            return
        self._shown = now
        line = self.line()
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if final else ""))
            self.stream.flush()
        elif line != self._last:
            log.info("%s", line)
        self._last = line


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
