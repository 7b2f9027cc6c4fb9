"""Atomic, no-clobber file writes: temp file in the target's folder, fsync, then link or rename."""

from __future__ import annotations

import errno
import functools
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from diffrun.errors import OutputExistsError, UsageError

OVERWRITE_HINT = "pass --overwrite to replace it"

# errno values meaning "this filesystem cannot make hard links": fall back to exists-check + rename.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


# Temp files (and folders) being written right now: what a hard exit on a second Ctrl-C removes
# (engine/signals.py). Only the registry lives here; the writers below add and drop their paths.
_IN_FLIGHT: set[str] = set()
_IN_FLIGHT_LOCK = threading.Lock()


def in_flight() -> list[str]:
    """The temp paths being written right now."""
    with _IN_FLIGHT_LOCK:
        return sorted(_IN_FLIGHT)


def track(path: str | Path) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.add(str(path))


def untrack(path: str | Path) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT.discard(str(path))


@contextmanager
def tracked(path: str | Path) -> Iterator[None]:
    """`path` is in flight while the block runs (removing it stays the block's job)."""
    track(path)
    try:
        yield
    finally:
        untrack(path)


def exists_error(path: str | Path) -> OutputExistsError:
    """The error for a target that is already there."""
    return OutputExistsError(f"{path} exists", hint=OVERWRITE_HINT)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is not thread-safe)."""
    with suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Best effort: make the new directory entry durable (not possible on every platform)."""
    with suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(tmp: str | Path, target: str | Path, *, overwrite: bool) -> None:
    """Move the finished temp file to `target`; without `overwrite`, never replace an existing file."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise exists_error(target) from None
    except (OSError, AttributeError) as e:
        if isinstance(e, OSError) and e.errno not in _NO_LINKS:
            raise
        if os.path.lexists(target):
            raise exists_error(target) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@contextmanager
def atomic_path(target: str | Path, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temp path next to `target`; fill it in the block; it is published when the block ends.

    The temp file is removed on any failure, KeyboardInterrupt included.
    """
    path = Path(target)
    if not overwrite and os.path.lexists(path):
        raise exists_error(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from e
    track(tmp)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        publish(tmp, path, overwrite=overwrite)
        untrack(tmp)
    except BaseException as e:
        with suppress(OSError):
            os.unlink(tmp)
        untrack(tmp)
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from e
        raise
    _fsync_dir(path.parent)


def atomic_write(target: str | Path, write: Callable[[BinaryIO], None], *, overwrite: bool = False) -> str:
    """Call `write(file)` on a temp file next to `target`, then publish it atomically; return the path."""
    with atomic_path(target, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return str(target)


def write_stdout(data: bytes, stdout: BinaryIO | None = None) -> str:
    """Write `data` to `stdout` (sys.stdout.buffer by default), flush, and return "-"."""
    if stdout is None:
        import sys

        stdout = sys.stdout.buffer
    stdout.write(data)
    stdout.flush()
    return "-"
