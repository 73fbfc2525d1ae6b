"""Uploads within bounds: how much one client may send, and a sentence (not a bare 500) when the disk is full.

Any client can post files to ``/gradio_api/upload`` without calling an endpoint, and gradio keeps them for
``CACHE_MAX_AGE_S``: a probe filled the upload folder at 183 MB/s, after which every call failed with HTTP
500. ``UploadGuard`` is an ASGI middleware (handed to gradio's FastAPI app through ``launch(app_kwargs=...)``)
that, before an upload's body is read, refuses one that does not say its size (HTTP 411) or that would take its
client over ``UPLOAD_BYTES`` or
``UPLOAD_REQUESTS`` within ``UPLOAD_WINDOW_S`` (HTTP 429), or leave less than ``DISK_RESERVE_BYTES`` free
(HTTP 507), each with a sentence; and it answers any request that fails for want of disk space with 507
and a sentence too.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

log = logging.getLogger("anomaly.ui")

UPLOAD_WINDOW_S = 600.0
# Per client and window: ten full batches (100 recordings of 10 s at 48 kHz stereo, about 400 MB each),
# 7 MB/s on average; the probe's flood sent 183 MB/s.
UPLOAD_BYTES = 4096 * 2**20
# A live microphone uploads ten 0.1 s chunks a second (6,000 per window): room for four behind one address
# (an office behind one proxy). A flood of tiny uploads is bounded by the count, a flood of big ones by size.
UPLOAD_REQUESTS = 24_000
DISK_RESERVE_BYTES = 1024 * 2**20
UPLOAD_PATH = "/gradio_api/upload"


def _client(scope: dict) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for":
            return value.decode("latin-1").split(",")[0].strip()
    client = scope.get("client")
    return client[0] if client else "?"


class UploadGuard:
    """ASGI middleware: per-client upload budget, a disk reserve, and a sentence when the disk is full."""

    def __init__(
        self,
        app,
        *,
        folder: str | Path,
        max_bytes: int = UPLOAD_BYTES,
        max_requests: int = UPLOAD_REQUESTS,
        window_s: float = UPLOAD_WINDOW_S,
        reserve_bytes: int = DISK_RESERVE_BYTES,
    ):
        self.app = app
        self.folder = Path(folder)
        self.max_bytes, self.max_requests, self.window_s = max_bytes, max_requests, window_s
        self.reserve_bytes = reserve_bytes
        self._sent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("method") == "POST" and scope.get("path", "").endswith(UPLOAD_PATH):
            refusal = self._refusal(scope)
            if refusal is not None:
                log.info("refused an upload from %s: %s", _client(scope), refusal[1])
                return await _answer(send, *refusal)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or started:
                raise
            log.warning("the disk is full: %s %s refused", scope.get("method"), scope.get("path"))
            await _answer(send, 507, _DISK_FULL)

    def _refusal(self, scope: dict) -> tuple[int, str] | None:
        length = next((int(v) for k, v in scope.get("headers") or [] if k == b"content-length"), None)
        if length is None:
            return 411, "An upload must say its size (Content-Length)."
        folder = self.folder
        while not folder.exists() and folder != folder.parent:  # gradio makes it on the first upload
            folder = folder.parent
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        if free is not None and free - length < self.reserve_bytes:
            return 507, _DISK_FULL
        now, who = time.monotonic(), _client(scope)
        with self._lock:
            sent = self._sent[who]
            while sent and sent[0][0] < now - self.window_s:
                sent.popleft()
            total = sum(size for _, size in sent)
            if len(sent) >= self.max_requests or total + length > self.max_bytes:
                minutes = self.window_s / 60
                return 429, (
                    f"Too many uploads from you: {total / 2**20:,.0f} MB in {len(sent)} uploads within "
                    f"{minutes:g} minutes; at most {self.max_bytes / 2**20:,.0f} MB and {self.max_requests} "
                    f"uploads per {minutes:g} minutes. Try again later."
                )
            sent.append((now, length))
        return None


_DISK_FULL = "The server's disk is full for now, so nothing more can be uploaded; try again in a few minutes."


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def app_kwargs(*inner) -> dict:
    """What ``demo.launch(app_kwargs=...)`` needs to put ``UploadGuard`` in front of gradio's routes, and
    the middleware ``inner`` behind it."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(UploadGuard, folder=get_upload_folder()), *inner]}
