"""Ctrl-C and SIGTERM in every phase.

Python runs signal handlers only in the main thread, between bytecodes: a main thread inside a long
torch op, a model load or a C library call would not notice a signal for minutes. So the C-level
handler's wake-up byte (`signal.set_wakeup_fd`) goes to a watcher thread, which sees every signal at
once, wherever the main thread is:

- `interrupts()` (every command): the first signal raises KeyboardInterrupt in the main thread as
  soon as it runs Python again (a step callback, a socket read returning, ...); the command unwinds,
  temp files go, `error: interrupted`, exit 130. If the main thread has not got there within
  `GRACE` seconds, the watcher ends the process itself (`hard_exit`).
- `StopRequested` (batch): the first signal only sets a flag the engine polls (stop taking jobs,
  abandon the running micro-batch at its next step, log, summary); no deadline.
- Either way a second signal ends the process at once (`hard_exit`): children killed, diffrun's temp
  files removed, `error: interrupted`, exit 130.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None)
GRACE = 1.0
"""Seconds the main thread has to reach Python after the first signal before the process is ended."""
EXIT_CODE = 130
STOP_MESSAGE = b"\nstopping after the current jobs (Ctrl-C again to quit now)\n"


class _Guard:
    """The process-wide state: handlers, the wake-up pipe, the watcher thread, the signal count."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.depth = 0
        self.graceful: list[bytes] = []
        """Stack of StopRequested messages; non-empty means the first signal only sets the flag."""
        self.event = threading.Event()
        self.count = 0
        self.signal: int | None = None
        self.raised = False
        self.deadline: float | None = None
        self.claimed = False
        self.lock = threading.Lock()
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    # -- install / uninstall (main thread only) ---------------------------------------------------
    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self.depth += 1
        if self.depth > 1:
            return True
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if os.name != "posix":  # no select() on pipes: the Python handler counts (main thread only)
            return True
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, args=(read,), name="diffrun-signals", daemon=True)
        self._thread.start()
        return True

    def uninstall(self) -> None:
        self.depth -= 1
        if self.depth > 0:
            return
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self._pipe is not None:
            read, write = self._pipe
            with contextlib.suppress(OSError):
                os.write(write, b"\0")  # ends the watcher
            if self._thread is not None:
                self._thread.join(timeout=5)
            for fd in (read, write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipe = self._thread = None
        self._reset()  # a fresh state for the next run in this process (tests)

    # -- the two halves of a signal ---------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Python-level handler (main thread, when it runs Python again)."""
        if self._thread is None:
            self._signalled(signum)
        if self.graceful or self.raised:
            return
        self.raised = True
        raise KeyboardInterrupt

    def _watch(self, read: int) -> None:
        """The watcher thread: one byte per signal from the C handler; the deadline after the first.
        A 0 byte (uninstall) ends it; uninstall closes the pipe after joining it."""
        while True:
            wait = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            ready, _, _ = select.select([read], [], [], wait)
            if not ready:
                hard_exit()
                return
            data = os.read(read, 64)
            if not data or b"\0" in data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self._signalled(signum)

    def _signalled(self, signum: int) -> None:
        self.count += 1
        if self.count > 1:
            hard_exit()
            return
        self.signal = signum
        self.event.set()
        if self.graceful:
            os.write(2, self.graceful[-1])
        else:
            self.deadline = time.monotonic() + GRACE


_GUARD = _Guard()


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Every command runs inside this: the first signal stops it within about a second (see module doc)."""
    installed = _GUARD.install()
    try:
        yield
    finally:
        if installed:
            _GUARD.uninstall()


def requested() -> bool:
    """True once a first SIGINT/SIGTERM arrived."""
    return _GUARD.event.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a signal asked the command to stop (step callbacks, phase boundaries).

    The signal handler raised it already; this catches the case where library code swallowed it."""
    if _GUARD.event.is_set() and not _GUARD.graceful:
        raise KeyboardInterrupt


def claim_exit() -> bool:
    """True for the first caller only: the one that reports `interrupted` and ends the process."""
    with _GUARD.lock:
        if _GUARD.claimed:
            return False
        _GUARD.claimed = True
        return True


def report_interrupt() -> bool:
    """For the main thread about to print `interrupted`: True if it should; False (after a short
    wait) when the watcher is already ending the process and has said so itself."""
    if claim_exit():
        return True
    time.sleep(2 * GRACE)  # let hard_exit finish removing temp files before anything else exits
    return False


def _children() -> list[int]:
    """Process ids of this process's children (Linux /proc; elsewhere none are known)."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/self/task/{task}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
    return sorted(pids)


def _end_children() -> None:
    """SIGKILL every child (ffmpeg, ...) and reap it, so none writes a file after we are gone."""
    children = _children()
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    until = time.monotonic() + 0.5
    for pid in children:
        while time.monotonic() < until:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.01)


def _remove_temp_files() -> None:
    """Remove the temp files diffrun has in flight (only if outputs were ever imported: no imports here)."""
    atomic = sys.modules.get("diffrun.outputs.atomic")
    if atomic is None:
        return
    for path in atomic.in_flight():
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def hard_exit() -> None:
    """End the process now: children killed, temp files removed, `error: interrupted`, exit 130.

    Called from the watcher thread; only os-level calls (no rich, no imports, no locks the main
    thread may hold)."""
    if not claim_exit():
        return  # the main thread is already reporting and exiting
    with contextlib.suppress(Exception):  # best effort: nothing may stop the exit below
        _end_children()
        _remove_temp_files()
    tty = os.isatty(2)
    with contextlib.suppress(OSError):
        # On a terminal: leave the progress bar's line and show the cursor rich hid.
        os.write(2, (b"\x1b[?25h\n" if tty else b"") + b"error: interrupted\n")
    os._exit(EXIT_CODE)


class StopRequested:
    """`batch`'s graceful stop while active: the first signal only sets `requested` (and says so on
    stderr); a second one ends the process at once."""

    def __init__(self, message: bytes = STOP_MESSAGE) -> None:
        self._message = message
        self._active = False

    @property
    def requested(self) -> bool:
        return _GUARD.event.is_set()

    @property
    def signal(self) -> int | None:
        return _GUARD.signal

    def request(self) -> None:
        _GUARD.event.set()

    def __enter__(self) -> StopRequested:
        self._active = _GUARD.install()
        if self._active:
            _GUARD.graceful.append(self._message)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            _GUARD.graceful.pop()
            _GUARD.uninstall()
            self._active = False
