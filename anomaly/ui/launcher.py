"""``python app.py`` in a subprocess, as a Space runs it: one launcher for the benchmark, the load test and
the test suite's app fixture.

``app_server`` starts it on a free loopback port in a working folder of its own (log, uploads, example
cache); ``AppServer.wait_until_serving`` waits for HTTP, ``AppServer.wait_until_ready`` for the line gradio
prints once the start-up events (example caching) have run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from anomaly.measure import process_memory_mb

# Where app.py sits when the project is used from its repository (it is not part of the installed package).
DEFAULT_APP_PATH = Path(__file__).resolve().parent.parent.parent / "app.py"
# Printed by gradio after the start-up events (example caching) have run: from then on the app is ready.
READY_MARKER = "Streamable HTTP URL"
# Settings of the calling environment that would change which model the app loads or where it listens.
CLEARED_ENV = ("ANOMALY_HUB_REPO", "ANOMALY_HUB_REVISION", "GRADIO_SERVER_NAME", "GRADIO_ROOT_PATH")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A ``python app.py`` process started by ``app_server``."""

    process: subprocess.Popen
    url: str
    log: Path
    work: Path
    started: float  # time.monotonic() just before the process was started

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def memory_mb(self, field: str = "VmRSS") -> float | None:
        return process_memory_mb(self.pid, field)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {self.process.returncode}:\n{self.log_tail()}")

    def wait_until_serving(self, timeout_s: float = 240.0) -> None:
        """Block until the server answers HTTP; raise RuntimeError if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py not serving after {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_until_ready(self, timeout_s: float = 240.0) -> None:
        """Block until the start-up events have run (examples cached) and the server answers HTTP."""
        deadline = time.monotonic() + timeout_s
        while READY_MARKER not in self.log_tail(10**7):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py not ready after {timeout_s:g} s:\n{self.log_tail()}")
            time.sleep(0.2)
        self.wait_until_serving(max(1.0, deadline - time.monotonic()))


@contextmanager
def app_server(
    work: Path, *, bundle: str | Path | None = None, app_path: Path = DEFAULT_APP_PATH, **env: str
) -> Iterator[AppServer]:
    """Start ``python app.py`` on a free loopback port; stop it on exit.

    ``work`` is its working directory and holds its log, upload folder and example cache (so a second start
    in the same folder has warm caches). No Hub repo is set and the Hub is never contacted unless ``env``
    says otherwise. ``bundle`` sets ``ANOMALY_BUNDLE``; ``env`` adds or overrides variables. Waiting until it
    serves is up to the caller, so that start-up can be timed.
    """
    if not app_path.is_file():
        raise RuntimeError(f"{app_path} not found: run from the project's repository")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    child_env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_EXAMPLES_CACHE=str(work / "examples-cache"),
        GRADIO_TEMP_DIR=str(work / "uploads"),
        GEARBOX_DATA_DIR=str(work / "data"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    if bundle is not None:
        child_env["ANOMALY_BUNDLE"] = str(Path(bundle).resolve())
    child_env.update(env)
    log_path = work / "app.log"
    with open(log_path, "ab") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(app_path)],
            cwd=work,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = AppServer(
        process=process, url=f"http://127.0.0.1:{port}", log=log_path, work=work, started=started
    )
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def loopback_client(url: str, **kwargs):
    """A ``gradio_client.Client`` for an app on this machine.

    ``ssl_verify=False`` because gradio_client builds a new httpx client for every upload, call and
    download, and with verification on each one loads the CA bundle (10 to 50 ms, up to three times per
    request); over plain http on loopback there is no TLS, so that would only time the client's set-up.
    """
    from gradio_client import Client

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    options = {"verbose": False, "download_files": False, "ssl_verify": False, "analytics_enabled": False}
    return Client(url, **{**options, **kwargs})


def http_call(http, api_name: str, data: list) -> object:
    """One call through gradio's documented HTTP API (``/gradio_api/call``) on an open httpx client."""
    answer = http.post(f"/gradio_api/call/{api_name.strip('/')}", json={"data": data})
    answer.raise_for_status()
    event_id = answer.json()["event_id"]
    with http.stream("GET", f"/gradio_api/call/{api_name.strip('/')}/{event_id}") as stream:
        text = "".join(stream.iter_text())
    if "event: complete" not in text:
        raise RuntimeError(f"{api_name} did not complete: {text[-300:]}")
    return json.loads(text.split("event: complete", 1)[1].split("data:", 1)[1].strip())


def http_upload(http, path: Path) -> dict:
    with open(path, "rb") as fh:
        answer = http.post("/gradio_api/upload", files=[("files", (path.name, fh))])
    answer.raise_for_status()
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
