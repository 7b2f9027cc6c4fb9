"""Catch what C libraries (libtiff) write straight to file descriptor 2 during one decode.

libtiff reports warnings and errors with `fprintf(stderr, ...)` from C: Python's `sys.stderr` never
sees them, and one damaged TIFF can print hundreds of lines in the middle of other output. Here fd 2
is pointed at a pipe for the length of one decode, under one process-wide lock, so that every line
caught belongs to that decode. A thread drains the pipe while the decode runs (a full pipe would
block libtiff), keeping at most `MAX_KEPT` bytes.

While fd 2 is redirected, `sys.stderr` is swapped for a stream on a duplicate of the real stderr,
so that Python code in other threads (progress, other inputs' error lines) still reaches the
terminal instead of the pipe. Code that kept a reference to the old `sys.stderr` object, or other C
code writing to fd 2 at that moment, is caught with the decode: the cost of one shared descriptor.

If fd 2 cannot be duplicated (no stderr at all), nothing is redirected and nothing is caught.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_KEPT = 64 * 1024
_LOCK = threading.Lock()
# One text stream per target of fd 2 (keyed by device and inode), never closed: another thread may
# still be writing to it after the swap is undone.
_REAL_STDERR: dict[tuple[int, int], io.TextIOWrapper] = {}


@dataclass
class Caught:
    """The lines written to fd 2, filled in when the `capture()` block ends."""

    lines: list[str] = field(default_factory=list)
    truncated: bool = False


@contextlib.contextmanager
def capture(enabled: bool = True) -> Iterator[Caught]:
    """Point fd 2 at a pipe for the block (serialised process-wide); yields `Caught`."""
    caught = Caught()
    if not enabled:
        yield caught
        return
    with _LOCK:
        redirect = _Redirect.start()
        if redirect is None:
            yield caught
            return
        try:
            yield caught
        finally:
            data, caught.truncated = redirect.stop()
            text = data.decode("utf-8", "replace")
            caught.lines = [line.strip() for line in text.splitlines() if line.strip()]


class _Redirect:
    def __init__(self, saved: int, read_end: int, write_end: int, stream: io.TextIOWrapper | None) -> None:
        self.saved = saved
        self.read_end = read_end
        self.write_end = write_end
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = False
        self.old_stderr = sys.stderr
        self.thread = threading.Thread(target=self._drain, name="diffrun-fd2", daemon=True)
        self.thread.start()
        _flush(sys.stderr)
        if stream is not None:
            sys.stderr = stream
        os.dup2(write_end, 2)

    @classmethod
    def start(cls) -> _Redirect | None:
        try:
            saved = os.dup(2)
        except OSError:
            return None
        try:
            read_end, write_end = os.pipe()
        except OSError:
            os.close(saved)
            return None
        return cls(saved, read_end, write_end, _real_stderr(saved))

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                return
            if not chunk:
                return
            room = MAX_KEPT - self.kept
            if len(chunk) > room:
                self.dropped = True
                chunk = chunk[:room]
            if chunk:
                self.chunks.append(chunk)
                self.kept += len(chunk)

    def stop(self) -> tuple[bytes, bool]:
        try:
            os.dup2(self.saved, 2)
        finally:
            sys.stderr = self.old_stderr
            os.close(self.saved)
            os.close(self.write_end)  # the C side's copy went with the dup2 above: the reader sees EOF
            self.thread.join()
            os.close(self.read_end)
        return b"".join(self.chunks), self.dropped


def _real_stderr(fd: int) -> io.TextIOWrapper | None:
    """A text stream on (a duplicate of) `fd`, the real stderr, shaped like the current sys.stderr."""
    current = sys.stderr
    if current is None:
        return None
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        stream = _REAL_STDERR.get(key)
        if stream is None:
            raw = open(os.dup(fd), "wb", buffering=0)  # noqa: SIM115 - kept open on purpose (see above)
            stream = io.TextIOWrapper(raw, encoding=getattr(current, "encoding", None) or "utf-8",
                                      errors="backslashreplace", line_buffering=True, write_through=True)
            _REAL_STDERR[key] = stream
    except OSError:
        return None
    return stream


def _flush(stream: object) -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream.flush()  # type: ignore[attr-defined]
