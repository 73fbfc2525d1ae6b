"""The benchmark's measuring tools, shared by ``anomaly.bench``, the archive's workers and the app's half of
the benchmark (``anomaly.ui.bench``).

``measure_app`` runs that app half as a program of its own, ``python -m anomaly.ui.bench``, the way the app
half itself starts ``python app.py``: the engine drives the page's side from outside and never imports it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger("anomaly")

APP_BENCH_MODULE = "anomaly.ui.bench"


def process_memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of a process, in MB (None off Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def timings_ms(call: Callable[[], object], reps: int, *, warmup: int = 3) -> np.ndarray:
    """Wall-clock milliseconds of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    out = np.empty(reps)
    for i in range(reps):
        started = time.perf_counter()
        call()
        out[i] = (time.perf_counter() - started) * 1000.0
    return out


def measure_app(bundle: str | None, work: Path, clips: list[Path], *, quick: bool) -> tuple[dict, list[str]]:
    """Cold start, round trips and peak memory of ``python app.py`` (see ``anomaly.ui.bench.measure_app``),
    measured by ``python -m anomaly.ui.bench`` in a process of its own; its progress shows on our stderr.

    Raises RuntimeError with the app half's own message when it could not measure.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    request, answer = work / "app-bench-request.json", work / "app-bench-answer.json"
    request.write_text(
        json.dumps(
            {
                "bundle": None if bundle is None else str(bundle),
                "work": str(work),
                "clips": [str(c) for c in clips],
                "quick": quick,
                "log_level": log.getEffectiveLevel(),
            }
        )
    )
    answer.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", APP_BENCH_MODULE, str(request), str(answer)], stdin=subprocess.DEVNULL
    )
    if not answer.is_file():
        raise RuntimeError(f"python -m {APP_BENCH_MODULE} exited with code {done.returncode} and no numbers")
    result = json.loads(answer.read_text())
    if result.get("error"):
        raise RuntimeError(result["error"])
    return result["numbers"], result["notes"]
