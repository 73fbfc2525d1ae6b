"""The app's half of ``python -m anomaly bench``: cold start, round trips and memory of ``python app.py``.

The engine's half (core path, batch, listening live) is ``anomaly.bench``. It runs this half as a program,
``python -m anomaly.ui.bench REQUEST ANSWER`` (through ``anomaly.measure.measure_app``), so that the engine
never imports the page's side: REQUEST is a JSON file of ``measure_app``'s arguments, ANSWER receives
``{"numbers": ..., "notes": ...}`` or ``{"error": ...}``.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from anomaly.bench import NOOP_ENDPOINT
from anomaly.measure import timings_ms
from anomaly.ui.launcher import app_server, http_call, http_upload, loopback_client

log = logging.getLogger("anomaly")


def long_recording(clips: list[Path], out: Path, seconds: float = 120.0) -> Path:
    """One recording of ``seconds`` made of the synthetic clips end to end."""
    import soundfile as sf

    parts, sr, total = [], None, 0.0
    for clip in itertools.cycle(clips):
        y, sr = sf.read(clip, dtype="float32")
        parts.append(y)
        total += len(y) / sr
        if total >= seconds:
            break
    sf.write(out, np.concatenate(parts)[: int(seconds * sr)], sr, subtype="PCM_16")
    return out


def measure_app(bundle: str | None, work: Path, clips: list[Path], *, quick: bool) -> tuple[dict, list[str]]:
    """Cold start, round trips and peak memory of ``python app.py``; notes on anything not measured."""
    from gradio_client import handle_file

    reps = 10 if quick else 40
    clip = handle_file(str(clips[0]))
    notes: list[str] = []
    extra: dict[str, float] = {}

    log.info("starting the app once to warm its caches")
    with app_server(work, bundle=bundle) as server:
        server.wait_until_ready()
        loopback_client(server.url).predict(clip, api_name="/score")

    log.info("starting the app again: cold start with warm caches")
    with app_server(work, bundle=bundle) as server:
        server.wait_until_ready()
        client = loopback_client(server.url)  # pictures stay on the server: a browser fetches them itself
        # A fresh file for this server: gradio_client rewrites the dict it is given to the first server's
        # copy, a path this one refuses to read.
        clip = handle_file(str(clips[0]))
        client.predict(clip, api_name="/score")
        cold_start = time.monotonic() - server.started

        log.info("round trips: %d each of /score, /analyze, %s", reps, NOOP_ENDPOINT)
        score = timings_ms(lambda: client.predict(clip, api_name="/score"), reps)
        analyze = timings_ms(lambda: client.predict(clip, True, api_name="/analyze"), reps)
        try:
            noop: float | None = float(
                np.median(timings_ms(lambda: client.predict(api_name=NOOP_ENDPOINT), reps))
            )
        except ValueError as exc:  # gradio_client: "Cannot find a function with api_name ..."
            noop = None
            notes.append(
                f"{NOOP_ENDPOINT} not measured ({str(exc).splitlines()[0][:80]}): the app needs a hidden no-op "
                f'endpoint, e.g. gr.api(lambda: "ok", api_name="ping", api_visibility="undocumented")'
            )
        # The same through plain HTTP on one kept-alive connection: what the server itself costs.
        # gradio_client polls for the answer every 50 ms (gradio_client/utils.py), which alone sets a
        # floor of about 50 ms on every round trip it makes.
        import httpx

        with httpx.Client(base_url=server.url, timeout=60) as http:
            extra["api_score_http_ms_p50"] = float(
                np.median(timings_ms(lambda: http_call(http, "score", [http_upload(http, clips[0]), None]), reps))
            )
            if noop is not None:
                extra["api_noop_http_ms_p50"] = float(
                    np.median(timings_ms(lambda: http_call(http, NOOP_ENDPOINT, []), reps))
                )
        log.info("one full batch of 100 clips, for the memory peak")
        client.predict([handle_file(str(c)) for c in clips[:100]], api_name="/batch")
        rss = server.memory_mb("VmHWM")
        log.info("a batch of 100 recordings of 120 s (the longest accepted), for the memory peak")
        long_clip = long_recording(clips, work / "long_120s.wav")
        client.predict([handle_file(str(long_clip))] * 100, api_name="/batch")
        extra["batch_120s_rss_mb"] = server.memory_mb("VmHWM")
    numbers = {
        "api_score_ms_p50": float(np.median(score)),
        "api_analyze_ms_p50": float(np.median(analyze)),
        "api_noop_ms_p50": noop,
        "cold_start_s": cold_start,
        "rss_mb": rss,
        **extra,
    }
    return numbers, notes


def main(argv: list[str] | None = None) -> int:
    """Measure the app as a request file asks and write the answer file; 1 when it could not measure."""
    request_path, answer_path = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(request_path).read_text())
    logging.basicConfig(level=request.get("log_level", logging.INFO), format="%(message)s", stream=sys.stderr)
    try:
        numbers, notes = measure_app(
            request["bundle"], Path(request["work"]), [Path(c) for c in request["clips"]], quick=request["quick"]
        )
        answer: dict = {"numbers": numbers, "notes": notes}
    except Exception as exc:  # anything that stopped the measuring: the engine's table says what it was
        log.exception("the app could not be measured")
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    Path(answer_path).write_text(json.dumps(answer))
    return 1 if "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
