"""Load test of the app: concurrent gradio_client clients mixing good, bad and batch requests.

Usage::

    python scripts/load_test.py                       # starts python app.py itself on a free port
    python scripts/load_test.py --clients 4 --requests 5 --bundle /path/to/bundle
    python scripts/load_test.py --url http://127.0.0.1:7860 --pid 12345

Without ``--url`` it starts ``python app.py`` on a free loopback port (``ANOMALY_BUNDLE`` set to
``--bundle`` when given) and stops it at the end. Only loopback URLs are accepted. Every client sends
``--requests`` requests, one after the other, from a fixed rotation: ``/score`` and ``/analyze`` of valid
synthetic clips, invalid uploads (a text file renamed ``.wav``, an empty ``.wav``) to ``/score`` or
``/analyze``, and ``/batch`` of valid clips with one invalid file among them.

Checks (any violation gives exit code 1):

- every valid request is answered with a label among the three labels and the score of a direct
  ``/score`` of the same file, made before the load: within 1e-6 for ``/score``; for ``/batch``, whose
  windows share one network batch with other files, within one unit of the 4 decimals the API rounds to;
  for ``/analyze``, within the 2 decimals its details show;
- every invalid upload comes back as a gradio_client ``AppError`` naming the file, without a traceback;
- no request is lost (an exception of another kind, no answer within ``--request-timeout`` or the whole
  run over ``--time-limit``);
- the app's resident memory (``VmRSS``) after the run is within ``--memory-slack-mb`` (100) of before it,
  measured after a concurrent warm-up of ``--warmup`` requests per client (needs the app's pid: known
  when the script starts the app, else ``--pid``).

Prints p50 and p95 latency per kind of request. Exit code 2 when the app cannot be started or reached.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from anomaly.measure import process_memory_mb  # noqa: E402
from anomaly.scoring import LABELS  # noqa: E402
from anomaly.ui.launcher import app_server, loopback_client  # noqa: E402

# The order every client cycles through (each starting at another place), so that even a short run
# covers every kind of request.
ROTATION = (
    "score",
    "analyze",
    "invalid",
    "score",
    "batch",
    "score",
    "analyze",
    "invalid",
    "score",
    "analyze",
)
INVALID = ("notes.wav", "empty.wav")
BATCH_TOLERANCE = 1e-4 + 1e-6  # the API rounds scores to 4 decimals
ANALYZE_TOLERANCE = 0.005 + 1e-4  # the details show the score with 2 decimals
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Outcome:
    kind: str
    ms: float
    problem: str | None = None  # None: answered as expected


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def make_clips(folder: Path, sr: int) -> tuple[list[Path], list[Path]]:
    """Valid synthetic clips (normal and faulty, two lengths) and the invalid uploads."""
    from anomaly.synth import synthesize_clip, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    plan = [
        ("normal_source.wav", "source", "normal", None, 10.0),
        ("normal_target.wav", "target", "normal", None, 10.0),
        ("fault_tooth.wav", "source", "anomaly", "tooth", 10.0),
        ("fault_bearing_4s.wav", "target", "anomaly", "bearing", 4.0),
    ]
    valid = []
    for i, (name, domain, label, fault, seconds) in enumerate(plan):
        wave, _ = synthesize_clip(domain, label, 500 + i, fault=fault, duration_s=seconds, sr=sr)
        valid.append(write_clip(folder / name, wave, sr))
    notes = folder / "notes.wav"
    notes.write_text("meeting notes, renamed to .wav by mistake\n" * 40)
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    return valid, [notes, empty]


def details_score(details: str) -> float | None:
    found = re.search(r"\*\*Score:\*\*\s*([-0-9.]+)", details or "")
    return float(found.group(1)) if found else None


def label_of(value) -> str | None:
    return value.get("label") if isinstance(value, dict) else value


class LoadClient:
    """One simulated user: its own gradio_client.Client and its own place in the rotation."""

    def __init__(self, index: int, url: str, valid: list[Path], invalid: list[Path], reference: dict, args):
        self.index = index
        self.client = loopback_client(url)
        self.valid, self.invalid, self.reference, self.args = valid, invalid, reference, args

    def run(self, report: Report, deadline: float) -> None:
        for i in range(self.args.requests):
            kind = ROTATION[(self.index * 3 + i) % len(ROTATION)]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                report.add(Outcome(kind, 0.0, "lost: the time limit was reached before it was sent"))
                continue
            started = time.perf_counter()
            try:
                problem = getattr(self, f"_{kind}")(i, min(remaining, self.args.request_timeout))
            except Exception as exc:  # anything not expected counts as lost or wrong
                problem = f"lost: {type(exc).__name__}: {str(exc).strip()[:200]}"
            report.add(Outcome(kind, (time.perf_counter() - started) * 1000.0, problem))

    def warm_up(self, n: int, timeout: float) -> None:
        """``n`` requests from the rotation, answers not checked (the run itself reports problems)."""
        for i in range(n):
            kind = ROTATION[(self.index * 3 + i) % len(ROTATION)]
            try:
                getattr(self, f"_{kind}")(i, timeout)
            except Exception:  # a warm-up answer is not judged
                pass

    def _call(self, timeout: float, *args, api_name: str):
        return self.client.submit(*args, api_name=api_name).result(timeout=timeout)

    def _clip(self, i: int) -> Path:
        return self.valid[(self.index + i) % len(self.valid)]

    def _score(self, i: int, timeout: float) -> str | None:
        from gradio_client import handle_file

        clip = self._clip(i)
        result = self._call(timeout, handle_file(str(clip)), api_name="/score")
        expected = self.reference[clip.name]
        if result.get("label") not in LABELS:
            return f"/score {clip.name}: label {result.get('label')!r} is not one of {LABELS}"
        if abs(result["score"] - expected["score"]) > 1e-6 or result["label"] != expected["label"]:
            return f"/score {clip.name}: {result['score']} {result['label']}, expected {expected}"
        return None

    def _analyze(self, i: int, timeout: float) -> str | None:
        from gradio_client import handle_file

        clip = self._clip(i)
        outputs = self._call(timeout, handle_file(str(clip)), True, api_name="/analyze")
        spectrogram, gauge, label, details, timeline = outputs
        expected = self.reference[clip.name]
        shown = details_score(details)
        if label_of(label) != expected["label"] or label_of(label) not in LABELS:
            return f"/analyze {clip.name}: label {label_of(label)!r}, expected {expected['label']!r}"
        if shown is None or abs(shown - expected["score"]) > ANALYZE_TOLERANCE:
            return f"/analyze {clip.name}: details show score {shown}, expected {expected['score']}"
        if spectrogram is None or gauge is None or timeline is None:
            return f"/analyze {clip.name}: a picture is missing"
        return None

    def _invalid(self, i: int, timeout: float) -> str | None:
        from gradio_client import handle_file
        from gradio_client.exceptions import AppError

        bad = self.invalid[(self.index + i) % len(self.invalid)]
        args = (handle_file(str(bad)), True) if i % 2 else (handle_file(str(bad)),)
        endpoint = "/analyze" if i % 2 else "/score"
        try:
            self._call(timeout, *args, api_name=endpoint)
        except AppError as exc:
            message = str(exc)
            if bad.name not in message or "Traceback" in message:
                return f"{endpoint} {bad.name}: unclear error {message[:200]!r}"
            return None
        return f"{endpoint} {bad.name}: answered instead of refused"

    def _batch(self, i: int, timeout: float) -> str | None:
        from gradio_client import handle_file

        files = [self._clip(i), self.invalid[0], self._clip(i + 1), self._clip(i + 2)]
        table, _csv = self._call(timeout, [handle_file(str(f)) for f in files], api_name="/batch")
        rows = table["data"]
        error = table["headers"].index("error")
        if [row[0] for row in rows] != [f.name for f in files]:
            return f"/batch: rows {[row[0] for row in rows]} do not match the files {[f.name for f in files]}"
        for row, f in zip(rows, files, strict=True):
            if f.name in INVALID:
                if row[1] is not None or not row[error]:
                    return f"/batch: the invalid {f.name} has no error in its row: {row}"
                continue
            expected = self.reference[f.name]
            if row[3] not in LABELS or row[3] != expected["label"]:
                return f"/batch {f.name}: label {row[3]!r}, expected {expected['label']!r}"
            if abs(row[1] - expected["score"]) > BATCH_TOLERANCE:
                return f"/batch {f.name}: score {row[1]}, expected {expected['score']}"
        return None


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def run(url: str, pid: int | None, args, work: Path) -> int:
    from gradio_client import handle_file

    sr = 16000
    if args.bundle:
        from anomaly.bundle import read_config

        sr = int(read_config(args.bundle)["preprocessing"]["sr"])
    valid, invalid = make_clips(work / "clips", sr)
    started = time.monotonic()
    deadline = started + args.time_limit

    # Reference scores, and a warm-up of every endpoint, before the memory baseline.
    reference = {}
    try:
        direct = loopback_client(url)
        for clip in valid:
            result = direct.predict(handle_file(str(clip)), api_name="/score")
            reference[clip.name] = {"score": result["score"], "label": result["label"]}
        direct.predict(handle_file(str(valid[0])), True, api_name="/analyze")
        direct.predict([handle_file(str(f)) for f in [*valid, invalid[0]]], api_name="/batch")
    except Exception as exc:  # the app is not there or not the app we expect
        print(f"error: the warm-up requests to {url} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    report = Report()
    clients = [LoadClient(i, url, valid, invalid, reference, args) for i in range(args.clients)]
    with ThreadPoolExecutor(args.clients, thread_name_prefix="load-client") as pool:
        # A concurrent warm-up first: the server's worker threads, their memory arenas and the network's
        # per-thread buffers are created by the first concurrent requests, which is not growth under load.
        for future in [pool.submit(c.warm_up, args.warmup, args.request_timeout) for c in clients]:
            future.result()
        rss_before = process_memory_mb(pid) if pid else None
        for future in [pool.submit(c.run, report, deadline) for c in clients]:
            future.result()
    wall = time.monotonic() - started
    rss_after = process_memory_mb(pid) if pid else None

    violations = [f"{o.kind}: {o.problem}" for o in report.outcomes if o.problem]
    expected_count = args.clients * args.requests
    if len(report.outcomes) != expected_count:
        violations.append(f"{expected_count - len(report.outcomes)} requests unaccounted for")
    memory_note = "not checked (no pid: pass --pid with --url)"
    if rss_before is not None and rss_after is not None:
        grown = rss_after - rss_before
        memory_note = f"{rss_before:.0f} MB -> {rss_after:.0f} MB ({grown:+.0f} MB)"
        if grown > args.memory_slack_mb:
            violations.append(f"memory grew by {grown:.0f} MB (limit {args.memory_slack_mb:g} MB)")

    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in report.outcomes:
        by_kind[o.kind].append(o)
    print(f"load test: {args.clients} clients x {args.requests} requests against {url} in {wall:.1f} s")
    print(f"{'request':10s} {'sent':>5s} {'ok':>5s} {'p50 ms':>8s} {'p95 ms':>8s}")
    summary = {}
    for kind in ("score", "analyze", "invalid", "batch"):
        outcomes = by_kind.get(kind, [])
        p50, p95 = percentiles([o.ms for o in outcomes if not (o.problem or "").startswith("lost")])
        ok = sum(o.problem is None for o in outcomes)
        summary[kind] = {"sent": len(outcomes), "ok": ok, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1)}
        print(f"{kind:10s} {len(outcomes):5d} {ok:5d} {p50:8.1f} {p95:8.1f}")
    p50, p95 = percentiles([o.ms for o in report.outcomes])
    ok = sum(o.problem is None for o in report.outcomes)
    print(f"{'all':10s} {len(report.outcomes):5d} {ok:5d} {p50:8.1f} {p95:8.1f}")
    print(f"server memory (VmRSS): {memory_note}")
    for v in violations[:30]:
        print(f"VIOLATION {v}")
    if len(violations) > 30:
        print(f"... and {len(violations) - 30} more violations")
    print("PASS" if not violations else f"FAIL: {len(violations)} violation(s)")
    if args.json:
        rss = {"before_mb": rss_before, "after_mb": rss_after}
        print(
            json.dumps({"ok": not violations, "violations": len(violations), "requests": summary, "rss": rss})
        )
    return 1 if violations else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="a running app on this machine (default: start python app.py here)")
    p.add_argument("--pid", type=int, help="the pid of the app at --url, for the memory check")
    p.add_argument("--bundle", metavar="DIR", help="ANOMALY_BUNDLE for the app this script starts")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default %(default)s)")
    p.add_argument("--requests", type=int, default=25, help="requests per client (default %(default)s)")
    p.add_argument(
        "--warmup", type=int, default=len(ROTATION), help="unchecked requests per client before the run"
    )
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds for one request")
    p.add_argument("--memory-slack-mb", type=float, default=100.0, help="allowed growth of VmRSS")
    p.add_argument("--json", action="store_true", help="last line: a summary as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 1000:
        p.error("--clients must be 1..64 and --requests 1..1000")
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        p.error("--url must be a loopback address (127.0.0.1, localhost or ::1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gearbox-load-") as tmp:
        work = Path(tmp)
        if args.url:
            return run(args.url.rstrip("/"), args.pid, args, work)
        try:
            with app_server(work / "app", bundle=args.bundle) as server:
                try:
                    server.wait_until_serving(timeout_s=min(240.0, args.time_limit))
                except RuntimeError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                return run(server.url, server.pid, args, work)
        except RuntimeError as exc:  # app.py missing
            print(f"error: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
