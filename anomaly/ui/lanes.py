"""Fair shares of the server: a batch lane that cannot starve the interactive calls, and room for live.

gradio runs each event in a *lane* (its ``concurrency_id``) with its own ``concurrency_limit``. Batch work
(``/batch``, the page's Score all, Adapt) shares the ``batch`` lane: one at a time, at most
``BATCH_QUEUE`` waiting, at most ``BATCH_PER_CLIENT`` of them from one client. Every interactive endpoint
(``/score``, ``/analyze``, ...) keeps a lane of its own, so batch work never queues in front of it.

gradio's ``max_size`` counts every lane together: a flood of batch calls filled it and a second visitor's
``/score`` got "Queue is full". So the global size is lifted and ``share_the_queue`` keeps each lane's own
size at the door instead, with a sentence that says why.

While a batch runs, an interactive call still competes for the same two cores; ``Priority`` lets the batch
step aside between two files while interactive calls are running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

from anomaly.ui.limits import client_address

BATCH_LANE = "batch"
BATCH_LIMIT = 1  # batches run one at a time
BATCH_QUEUE = 16  # batches waiting, all clients together
BATCH_PER_CLIENT = 2  # batches one client may have waiting
ANALYZE_LIMIT = 1  # /analyze draws pictures: one at a time leaves a core for /score
INTERACTIVE_QUEUE = 128  # calls waiting in one interactive lane (a burst of 80 /analyze fits)
LIVE_LANE = "live"
# Microphones streamed at once; the next visitor is told the live lane is full. Measured on the 2-core test
# machine with four Chromium fake microphones on the same machine (1.45 cores of it for the browsers): each
# heard 0.94-0.97 s of audio per second of wall time; six saturate the machine and hear 0.1-0.6.
LIVE_LISTENERS = 4
# A batch steps aside for interactive calls for at most this long before each file.
YIELD_AT_MOST_S = 10.0


def client_of(request, proxy_hops: int = 0) -> str:
    """Who sent a request (``limits.client_address``: the address the outermost proxy saw, if any)."""
    if request is None:
        return "?"
    forwarded = request.headers.get("x-forwarded-for", "")
    return client_address(forwarded, request.client.host if request.client else None, proxy_hops)


def share_the_queue(demo: gr.Blocks, proxy_hops: int = 0) -> gr.Blocks:
    """Lift gradio's global queue size and keep each lane's own at the door (call after ``demo.queue``).

    A refused call gets one sentence (gradio answers it with HTTP 400 or 503 and the sentence as detail):
    "You already have 2 batches waiting ..." or "The batch lane is full ...". (An instance attribute, like
    ``serving.refuse_unusable_inputs``: gradio's queue has no per-lane size of its own.)
    """
    from gradio import route_utils

    queue = demo._queue
    queue.max_size = None
    push = queue.push

    async def fair_push(body, request, username):
        try:
            lane = route_utils.get_fn(demo, None, body).concurrency_id
        except Exception:  # gradio's own push says what is wrong with the call
            return await push(body, request, username)
        waiting = queue.event_queue_per_concurrency_id.get(lane)
        events = list(waiting.queue) if waiting is not None else []
        if lane == BATCH_LANE:
            me = client_of(request, proxy_hops)
            mine = sum(1 for event in events if client_of(event.request, proxy_hops) == me)
            if mine >= BATCH_PER_CLIENT:
                return (
                    False,
                    f"You already have {mine} batches waiting; send the next one when they are done.",
                    "error",
                )
            if len(events) >= BATCH_QUEUE:
                return (
                    False,
                    f"The batch lane is full ({len(events)} batches waiting); try again in a few minutes. "
                    "Single recordings (/score, /analyze) are still answered at once.",
                    "queue_full",
                )
        elif len(events) >= INTERACTIVE_QUEUE:
            return False, f"The server is busy ({len(events)} calls waiting); try again in a minute.", "queue_full"
        return await push(body, request, username)

    queue.push = fair_push
    return demo


class Priority:
    """Interactive calls first: they say when they run (``interactive``), a batch waits for them between
    two files (``yield_to_interactive``)."""

    def __init__(self) -> None:
        self._running = 0
        self._idle = threading.Condition()

    @contextmanager
    def interactive(self) -> Iterator[None]:
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def yield_to_interactive(self, at_most_s: float = YIELD_AT_MOST_S) -> float:
        """Wait until no interactive call runs (at most ``at_most_s``); returns the seconds waited."""
        started = time.monotonic()
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0, timeout=at_most_s)
        return time.monotonic() - started


class LiveSeats:
    """Who is streaming a microphone now (seen within ``fresh_s``), so that the visitor after
    ``LIVE_LISTENERS`` is told the live lane is full instead of waiting in silence."""

    def __init__(self, seats: int = LIVE_LISTENERS, fresh_s: float = 3.0) -> None:
        self.seats, self.fresh_s = seats, fresh_s
        self._seen: dict[int, float] = {}
        self._lock = threading.Lock()

    def seen(self, listener: object) -> None:
        with self._lock:
            self._seen[id(listener)] = time.monotonic()

    def left(self, listener: object) -> None:
        with self._lock:
            self._seen.pop(id(listener), None)

    def taken(self) -> int:
        cutoff = time.monotonic() - self.fresh_s
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
            return len(self._seen)

    def full_message(self) -> str | None:
        taken = self.taken()
        if taken < self.seats:
            return None
        return (
            f"⚠️ The live lane is full: {taken} visitors are listening now, and this server scores at most "
            f"{self.seats} microphones at once in real time. Yours starts as soon as one stops; meanwhile you "
            "can upload a recording on the Analyze tab."
        )
