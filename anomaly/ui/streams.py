"""Every chunk of a live microphone stream is heard, however busy the server.

The page's microphone (gradio's streaming ``gr.Audio``) uploads a 0.1 s WAV chunk ten times a second and posts
each to ``/gradio_api/stream/{event_id}``. gradio keeps only the *last* chunk posted: one that arrives while the
handler still works on the one before replaces it, unheard. Measured with four fake microphones on two cores,
the server was handed 11 to 22 s of each 40 s of audio, and the listeners heard a third of their sound.

``ChunkTap`` is an ASGI middleware that notes, in order and per browser session, the file each posted chunk
was uploaded to; ``ChunkLog.take`` gives the handler every chunk noted up to the one gradio handed it. A busy
server then hears late, never less. Chunks once heard are deleted soon after (they are in the listening
session's memory): a listener would otherwise leave 36,000 files an hour in the upload folder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from anomaly.ui.uploads import read_small_body

log = logging.getLogger("anomaly.ui")

STREAM_PREFIX = "/gradio_api/stream/"
MAX_BODY_BYTES = 64 * 1024  # a chunk's post names its file; the audio itself was uploaded before
MAX_WAITING = 600  # chunks kept per session: a minute of audio at ten chunks a second
IDLE_S = 120.0  # a session not heard from this long is forgotten
HEARD_LIFE_S = 30.0  # a heard chunk's file is deleted this long after


class ChunkLog:
    """The live chunks posted but not yet heard, per browser session, in the order they were posted."""

    def __init__(self, folder: str | Path, max_waiting: int = MAX_WAITING, idle_s: float = IDLE_S) -> None:
        self.folder = os.path.realpath(folder)
        self.max_waiting, self.idle_s = max_waiting, idle_s
        self._waiting: dict[str, deque[str]] = {}
        self._seen: dict[str, float] = {}
        self._heard: deque[tuple[float, str]] = deque()
        self._taken: dict[str, deque[str]] = {}
        self._lock = threading.Lock()

    def _inside(self, path: str) -> str | None:
        real = os.path.realpath(path)
        return real if real.startswith(self.folder + os.sep) else None

    def note(self, session: str, path: str) -> None:
        """A chunk was posted for ``session``: its file (ignored unless it is in the upload folder)."""
        real = self._inside(path)
        if real is None or not session:
            return
        now = time.monotonic()
        with self._lock:
            waiting = self._waiting.setdefault(session, deque(maxlen=self.max_waiting))
            waiting.append(real)
            self._seen[session] = now
            for old in [s for s, t in self._seen.items() if t < now - self.idle_s]:
                self._waiting.pop(old, None)
                self._taken.pop(old, None)
                self._seen.pop(old, None)

    def take(self, session: str | None, current: str) -> list[str]:
        """The chunks to hear now: every one noted for ``session`` up to ``current`` (the one gradio handed
        the handler), oldest first; just ``current`` when it was not noted (no tap in front of the app)."""
        real = os.path.realpath(current)
        with self._lock:
            waiting = self._waiting.get(session or "")
            if not waiting or real not in waiting:
                # heard already, with the chunks before it (a handler called twice with one chunk)
                return [] if real in self._taken.get(session or "", ()) else [current]
            taken = []
            while waiting:
                taken.append(waiting.popleft())
                if taken[-1] == real:
                    break
            self._taken.setdefault(session or "", deque(maxlen=self.max_waiting)).extend(taken)
            return taken

    def forget(self, paths: list[str]) -> None:
        """Delete heard chunks ``HEARD_LIFE_S`` after they were heard (each in its own upload folder).

        Not at once: gradio names an upload by its content, so two listeners whose chunks are the same bytes
        (digital silence, or one sound played to two browsers) share a file, which the second may not have
        heard yet.
        """
        now = time.monotonic()
        with self._lock:
            self._heard.extend((now, path) for path in paths if self._inside(path) is not None)
            old = []
            while self._heard and self._heard[0][0] < now - HEARD_LIFE_S:
                old.append(self._heard.popleft()[1])
        for path in dict.fromkeys(old):
            try:
                os.remove(path)
                os.rmdir(os.path.dirname(path))
            except OSError:  # already gone
                pass


def upload_folder() -> str:
    """gradio's upload folder (``GRADIO_TEMP_DIR``, else the system's temp folder + ``gradio``)."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def middleware(chunks: ChunkLog):
    """``ChunkTap`` for ``demo.launch(app_kwargs={"middleware": [...]})``."""
    from starlette.middleware import Middleware

    return Middleware(ChunkTap, chunks=chunks)


def read_chunk(path: str) -> tuple[int | None, np.ndarray | None]:
    """A chunk file's (sample rate, int16 samples); (None, None) when it cannot be read.

    The page's WAV chunks say "unknown length" in their header; libsndfile reads what is there.
    """
    import soundfile as sf

    try:
        data, sr = sf.read(path, dtype="int16", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return None, None
    return int(sr), data


class ChunkTap:
    """ASGI middleware: note each live chunk posted to ``/gradio_api/stream/{event_id}`` in ``chunks``, then
    hand the request to gradio unchanged."""

    def __init__(self, app, *, chunks: ChunkLog) -> None:
        self.app, self.chunks = app, chunks

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") != "POST" or STREAM_PREFIX not in path or path.endswith("/close"):
            return await self.app(scope, receive, send)
        body, receive = await read_small_body(scope, receive, MAX_BODY_BYTES)
        if body is not None:
            self._note(body)
        return await self.app(scope, receive, send)

    def _note(self, body: bytes) -> None:
        try:
            posted = json.loads(body)
            chunk = posted["data"][0]
            session, file = posted["session_hash"], chunk["path"]
        except (ValueError, KeyError, IndexError, TypeError):
            return  # gradio answers a malformed post itself
        if isinstance(session, str) and isinstance(file, str):
            self.chunks.note(session, file)
