"""Per-input deadlines that hold whatever the peer does.

A socket timeout bounds one wait for bytes, not a whole response: a server that trickles one byte
every half second never trips it. So each input with a deadline is registered with one shared
watchdog thread (one for the process, never one per request); when the deadline passes, the watchdog
shuts down the socket the input is using, and the blocked read returns at once. Socket timeouts are
also shortened to the time left (`clamp`), so no single wait runs past the deadline either.

A connection is claimed by the input using it (`claim`, called by the connection classes in
`loaders/connections.py`); the watchdog only ever shuts down a socket whose connection its input
still holds, so a connection that went back to the pool and on to another input is left alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import socket
import threading
import time
from typing import Any

MARGIN = 0.005
"""Seconds: less time than this left counts as expired (no useful wait fits in it)."""

CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("diffrun_deadline", default=None)
"""The deadline of the input being fetched in this thread, read by the connection classes."""

_LOCK = threading.Lock()
"""Guards every connection's owner, every deadline's connection, and the watchdog's heap."""


class Deadline:
    """The wall-clock end of one input (None: no limit), and the connection it is using now."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.ends = None if seconds is None else self.started + seconds
        self.fired = False
        """True once the watchdog acted: whatever the connection returned since then is not to be trusted."""
        self.done = False
        self._conn: Any = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float | None:
        return None if self.ends is None else self.ends - time.monotonic()

    def expired(self) -> bool:
        return self.ends is not None and (self.fired or time.monotonic() >= self.ends - MARGIN)

    def clamp(self, timeout: Any) -> Any:
        """`timeout` (seconds, None or urllib3's default sentinel) shortened to the time left."""
        left = self.left()
        if left is None:
            return timeout
        left = max(0.001, left)
        return min(timeout, left) if isinstance(timeout, (int, float)) else left

    def claim(self, conn: Any) -> None:
        """This input now uses `conn` (an object with `sock`, optionally `watched_sock`)."""
        if self.ends is None:
            return
        with _LOCK:
            conn.diffrun_owner = self
            self._conn = conn

    def start(self) -> None:
        """Register with the watchdog (a no-op without a deadline)."""
        if self.ends is not None:
            _WATCHDOG.add(self)

    def finish(self) -> None:
        """The input is done: the watchdog forgets it and no longer touches its connection."""
        if self.ends is None:
            return
        with _LOCK:
            self.done = True
            conn, self._conn = self._conn, None
            if conn is not None and getattr(conn, "diffrun_owner", None) is self:
                conn.diffrun_owner = None
            _WATCHDOG.forget_locked()

    def _fire_locked(self) -> None:
        """Called by the watchdog, holding _LOCK: shut down the socket this input still holds."""
        self.fired = True
        conn = self._conn
        if conn is None or getattr(conn, "diffrun_owner", None) is not self:
            return
        for sock in (getattr(conn, "sock", None), getattr(conn, "watched_sock", None)):
            if sock is not None:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """Wake every blocked read on `sock`. socket.socket's own shutdown, also for an SSLSocket, so
    that the TLS object is left for the reading thread to fail on; an fd already closed is ignored."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread and a heap of deadlines; finished ones are dropped lazily, or compacted."""

    def __init__(self) -> None:
        self._cond = threading.Condition(_LOCK)
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._finished = 0
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        assert deadline.ends is not None
        with self._cond:
            heapq.heappush(self._heap, (deadline.ends, next(self._seq), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="diffrun-deadline", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def forget_locked(self) -> None:
        """A deadline finished (caller holds _LOCK): compact the heap once most entries are finished."""
        self._finished += 1
        if self._finished > 64 and self._finished * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].done]
            heapq.heapify(self._heap)
            self._finished = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                    self._finished = max(0, self._finished - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)[2]._fire_locked()


_WATCHDOG = _Watchdog()
