"""Graceful stop: the first Ctrl-C or SIGTERM asks the run to stop; the second exits at once (130)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)


class StopRequested:
    """Context manager that turns SIGINT/SIGTERM into a flag while it is active (main thread only)."""

    def __init__(self, message: bytes = b"\nstopping after the current jobs (Ctrl-C again to quit now)\n") -> None:
        self._event = threading.Event()
        self._message = message
        self._previous: dict[int, Any] = {}
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            os.write(2, b"\ninterrupted\n")
            os._exit(130)
        self.signal = signum
        self._event.set()
        os.write(2, self._message)

    def __enter__(self) -> StopRequested:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
