"""Atomic, no-clobber file writes: temp file in the target's folder, fsync, then link or rename.

A temp file is named `.NAME.PID.XXXXXXXX.tmp` (the target's name, the writer's pid, 8 random
characters), so a later run can tell a leftover of a killed writer from a concurrent run's file
(`clean_stale_temps`). Running out of space is a DiskError (exit 74), not a usage error.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from diffrun.errors import DiffrunError, OutputExistsError, StdoutClosed, UsageError, disk_error

OVERWRITE_HINT = "pass --overwrite to replace it"

# errno values meaning "this filesystem cannot make hard links": fall back to exists-check + rename.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}




def write_error(path: str | Path, exc: OSError) -> DiffrunError:
    """The error for a failed write of `path`: DiskError (exit 74) for a full or broken disk, else UsageError."""
    return disk_error(path, exc) or UsageError(f"cannot write {path}: {exc.strerror or exc}")


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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from e
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
            raise write_error(path, e) from e
        raise
    _fsync_dir(path.parent)


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


_TEMP_NAME = re.compile(r"\..+\.(\d{1,10})\.[a-z0-9_]{8}\.tmp")
"""What `atomic_path` names its temp files; group 1 is the writer's pid."""


def _running(pid: int) -> bool:
    """Whether a process with this pid exists here (one we may not signal still counts)."""
    if pid <= 0:
        return True  # not a real writer's pid: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False  # no such pid can exist
    return True


def clean_stale_temps(folder: str | Path, *, older_than: float) -> list[str]:
    """Remove diffrun temp files in `folder` that a killed writer left: named as `atomic_path` names them,
    last modified before `older_than` (a time.time()), and whose writer's pid is no longer running.
    A concurrent writer's files (its pid runs) are never touched. Returns the paths removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= older_than:
                continue
        except OSError:
            continue
        if not _running(int(match.group(1))):
            with suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.path)
    return removed


def check_writable(folder: str | Path, what: str) -> None:
    """Make `folder` (and its parents) if missing and prove a file can be created in it, or raise
    UsageError (exit 2; DiskError when the disk is full) naming `what` and the reason."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=_temp_prefix("diffrun-check"), suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        error = disk_error(path, e)
        if error is not None and error.code == "disk_full":
            raise error from None
        raise UsageError(f"{what} {path} is not writable: {e.strerror or e}", code="not_writable") from None


def atomic_write(target: str | Path, write: Callable[[BinaryIO], None], *, overwrite: bool = False) -> str:
    """Call `write(file)` on a temp file next to `target`, then publish it atomically; return the path."""
    with atomic_path(target, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return str(target)


def write_stdout(data: bytes, stdout: BinaryIO | None = None) -> str:
    """Write `data` to `stdout` (sys.stdout.buffer by default), flush, and return "-".

    A reader that went away (`| head -c 100`) is StdoutClosed (exit 141, nothing printed)."""
    if stdout is None:
        import sys

        stdout = sys.stdout.buffer
    try:
        stdout.write(data)
        stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed("stdout closed") from None
    return "-"
