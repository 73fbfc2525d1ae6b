"""Uploads within bounds: how much one client may send, and a sentence (not a bare 500) when the disk is full.

Any client can post files to ``/gradio_api/upload`` without calling an endpoint, and gradio keeps them for
``CACHE_MAX_AGE_S``: a probe filled the upload folder at 183 MB/s, after which every call failed with HTTP
500. ``UploadGuard`` is an ASGI middleware (handed to gradio's FastAPI app through ``launch(app_kwargs=...)``)
that, before an upload's body is read, refuses one that does not say its size (HTTP 411) or that would take its
client over ``UPLOAD_BYTES`` or
``UPLOAD_REQUESTS`` within ``UPLOAD_WINDOW_S`` (HTTP 429), or leave less than ``DISK_RESERVE_BYTES`` free
(HTTP 507), each with a sentence; and it answers any request that fails for want of disk space with 507
and a sentence too.

It also gives an upload that no call uses a shorter life (``UNUSED_UPLOAD_MAX_AGE_S`` rather than gradio's
``CACHE_MAX_AGE_S``): it notes the folders an upload's answer names (gradio keeps each upload in a folder
named by its content's hash), marks a folder used when a later POST's body names it (only small bodies are
read; an event call's body carries paths, not files), and a daemon thread, started on the first upload,
deletes the noted folders no call has used once they are old enough. Used uploads are left to gradio's own
sweep. A visitor who then names a deleted upload is told so by ``gone_message``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time
import weakref
from collections import OrderedDict, defaultdict, deque
from pathlib import Path

from starlette.requests import ClientDisconnect

from anomaly.config import Settings
from anomaly.ui import limits

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
# A call's JSON names its files by path; a bigger body (a file sent inline) is passed on unread.
INSPECTED_BODY_BYTES = 2**20
# Upload folders remembered at most (a few hundred bytes each); the oldest beyond it are forgotten, and then
# live gradio's full CACHE_MAX_AGE_S: forgetting never deletes anything early.
MAX_NOTED_UPLOADS = 20_000


def _client(scope: dict, proxy_hops: int) -> str:
    forwarded = ",".join(v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"x-forwarded-for")
    peer = scope.get("client")
    return limits.client_address(forwarded, peer[0] if peer else None, proxy_hops)


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
        unused_max_age_s: float = limits.UNUSED_UPLOAD_MAX_AGE_S,
        used_max_age_s: float = limits.CACHE_MAX_AGE_S,
        max_noted: int = MAX_NOTED_UPLOADS,
        inspected_bytes: int = INSPECTED_BODY_BYTES,
        proxy_hops: int = 0,
    ):
        self.app = app
        self.proxy_hops = proxy_hops
        self.folder = Path(folder)
        self.max_bytes, self.max_requests, self.window_s = max_bytes, max_requests, window_s
        self.reserve_bytes = reserve_bytes
        self.unused_max_age_s, self.used_max_age_s = unused_max_age_s, used_max_age_s
        self.max_noted, self.inspected_bytes = max_noted, inspected_bytes
        self._sent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        # Upload folder name -> [when noted or last used (monotonic), used]; oldest first.
        self._noted: OrderedDict[str, list] = OrderedDict()
        roots = {str(self.folder), os.path.abspath(self.folder)}
        self._named = re.compile("|".join(re.escape(r + os.sep) for r in roots) + r"([^/\\?#&\"']+)")
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("method") == "POST" and scope.get("path", "").endswith(UPLOAD_PATH):
            refusal = self._refusal(scope)
            if refusal is not None:
                log.info("refused an upload from %s: %s", _client(scope, self.proxy_hops), refusal[1])
                return await _answer(send, *refusal)
            send = self._noting(send)
        elif scope.get("method") == "POST":
            receive = await self._marking(scope, receive)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # A tab closed while it was still sending (a live microphone's chunk, an upload): nobody is left to
            # answer, and gradio would log a 70-line traceback for each.
            log.info("%s closed the connection during %s %s", _client(scope, self.proxy_hops), scope.get("method"),
                     scope.get("path"))
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
        now, who = time.monotonic(), _client(scope, self.proxy_hops)
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


    # --- the shorter life of unused uploads ------------------------------------------------------------

    def _noting(self, send):
        """``send`` that notes the upload folders named by a successful upload's answer (a list of paths)."""
        status, body = 0, bytearray()

        async def noting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                if len(body) <= self.inspected_bytes:
                    body.extend(message.get("body", b""))
                if not message.get("more_body") and len(body) <= self.inspected_bytes:
                    try:
                        paths = json.loads(bytes(body))
                    except ValueError:
                        paths = None
                    if isinstance(paths, list):
                        self.note([p for p in paths if isinstance(p, str)])
            await send(message)

        return noting_send

    async def _marking(self, scope: dict, receive):
        """Mark the uploads a small request body names as used; the app gets the same messages."""
        body, receive = await read_small_body(scope, receive, self.inspected_bytes)
        if body is not None:
            self.mark_used(body)
        return receive

    def note(self, paths: list[str]) -> None:
        """Remember the upload folders of ``paths`` (as gradio's upload answers them) as unused, from now."""
        now = time.monotonic()
        with self._lock:
            for path in paths:
                match = self._named.fullmatch(str(Path(path).parent)) if path else None
                if match is None:
                    continue
                name = match.group(1)
                used = self._noted.pop(name, [0.0, False])[1]
                self._noted[name] = [now, used]  # a used folder uploaded again stays used
            while len(self._noted) > self.max_noted:
                self._noted.popitem(last=False)
            if self._sweeper is None:
                self._sweeper = threading.Thread(
                    target=_sweep_while_alive, args=(weakref.ref(self),), name="unused-upload-sweep", daemon=True
                )
                self._sweeper.start()

    def mark_used(self, body: bytes) -> None:
        """Mark as used every noted upload folder that ``body`` (a call's JSON) names."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return
        if not text or "/" not in text:
            return
        try:
            strings = [v for v in _nodes(json.loads(text)) if isinstance(v, str)]
        except (ValueError, RecursionError):
            strings = [text]
        named = {m.group(1) for s in strings for m in self._named.finditer(s)}
        if not named:
            return
        now = time.monotonic()
        with self._lock:
            for name in named & self._noted.keys():
                del self._noted[name]
                self._noted[name] = [now, True]

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete the noted upload folders that no call used within ``unused_max_age_s``; forget used ones
        gradio's sweep has had time to delete. Returns the folders deleted."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = []
            for name, (at, used) in list(self._noted.items()):
                if used and now - at > self.used_max_age_s:
                    del self._noted[name]
                elif not used and now - at >= self.unused_max_age_s:
                    del self._noted[name]
                    expired.append(name)
        root = self.folder.resolve()
        deleted = []
        for name in expired:
            folder = self.folder / name
            # Only a folder directly inside the upload folder, never through a link.
            if name in (".", "..") or folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != root:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
        if deleted:
            log.info("deleted %d upload(s) no call used within %s", len(deleted), duration(self.unused_max_age_s))
        return deleted

    @property
    def sweep_every_s(self) -> float:
        return min(30.0, max(0.1, self.unused_max_age_s / 10))


async def read_small_body(scope: dict, receive, limit: int):
    """Read a request's body whole if it is at most ``limit`` bytes: (the body, or None when it is bigger or
    the client went away, and a ``receive`` that replays the messages read, then goes on with the client's).

    A bigger body (a Content-Length over the limit, or more than that read) is passed on unread."""
    length = next((v for k, v in scope.get("headers") or [] if k == b"content-length"), None)
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None, receive
    read, size, body = [], 0, None
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit:
            break
        if not message.get("more_body"):
            body = b"".join(m.get("body", b"") for m in read)
            break
    replay = deque(read)

    async def replaying():
        return replay.popleft() if replay else await receive()

    return body, replaying


def _sweep_while_alive(guard_ref) -> None:
    """The sweeper thread: runs while its guard exists (a test makes many), never holding it between sweeps."""
    while (guard := guard_ref()) is not None:
        every = guard.sweep_every_s
        try:
            guard.sweep()
        except Exception:  # a sweep that failed must not end the sweeping
            log.exception("the sweep of unused uploads failed")
        del guard
        time.sleep(every)


def _nodes(value):
    """Every value in a JSON-like tree (dicts, lists, tuples), the tree first."""
    yield value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        yield from _nodes(item)


def duration(seconds: float) -> str:
    """``300`` -> "5 minutes", ``2.5`` -> "2.5 seconds"."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' * (minutes != 1)}"
    return f"{seconds:g} second{'s' * (seconds != 1)}"


def gone_message(names: list[str], unused_s: float, max_age_s: float) -> str:
    """What a visitor reads who names uploads that have been deleted."""
    return (
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} no longer on the server: an upload that no call "
        f"uses within {duration(unused_s)} is deleted, any upload after {duration(max_age_s)}; upload it again."
    )


def deleted_uploads(inputs: object, folder: str | Path) -> list[str]:
    """The names (as the visitor knows them) of the files a call's ``inputs`` name inside the upload folder
    ``folder`` that are no longer there."""
    root = os.path.abspath(folder)
    names = []
    for value in (v for v in _nodes(inputs) if isinstance(v, dict)):
        path = value.get("path")
        if isinstance(path, str) and "://" not in path:
            where = os.path.abspath(path)
            if where.startswith(root + os.sep) and not os.path.exists(where):
                names.append(Path(str(value.get("orig_name") or "") or where).name)
    return names


def unused_upload_s(settings: Settings | None = None) -> float:
    """How long an unused upload is kept: the environment's ``GEARBOX_UNUSED_UPLOAD_S``, else the default."""
    settings = Settings.from_environ() if settings is None else settings
    return settings.unused_upload_s or limits.UNUSED_UPLOAD_MAX_AGE_S


_DISK_FULL = "The server's disk is full for now, so nothing more can be uploaded; try again in a few minutes."


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def app_kwargs(*inner, settings: Settings | None = None) -> dict:
    """What ``demo.launch(app_kwargs=...)`` needs to put ``UploadGuard`` in front of gradio's routes, with the
    budget and unused-upload life ``settings`` give (default: the environment's), and the middleware ``inner``
    behind it."""
    from gradio.utils import get_upload_folder
    from starlette.middleware import Middleware

    settings = Settings.from_environ() if settings is None else settings
    options = {
        "unused_max_age_s": unused_upload_s(settings),
        "used_max_age_s": limits.cache_sweep()[1],
        "proxy_hops": settings.proxy_hops,
    }
    if settings.upload_budget is not None:
        options["max_requests"], options["max_bytes"] = settings.upload_budget
    return {"middleware": [Middleware(UploadGuard, folder=get_upload_folder(), **options), *inner]}
