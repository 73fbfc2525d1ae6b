"""The table ``score-archive`` writes: its columns, the resumable Parquet file with its part files, and the
progress line.

While a run is under way its rows land in part files beside ``--out`` (a folder ``OUT.parts``), each written
whole or not at all, every ``checkpoint_s`` seconds; a run that dies keeps them. A run that ends merges
everything into ``--out`` (one row per file, sorted by path) and removes the parts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from anomaly.errors import BundleError

log = logging.getLogger("anomaly")

CHECKPOINT_S = 30.0
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

