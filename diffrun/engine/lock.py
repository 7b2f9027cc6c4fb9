"""One runner per results log: an exclusive flock on a lock file beside the log.

The lock file is `.NAME.lock` in the log's folder (for `results.jsonl`: `.results.jsonl.lock`). It
holds the holder's pid and host as one JSON line, so a refused run can name it. The lock is the
kernel's (flock): it goes away with the process however the process ends, so a lock file left by a
killed run is harmless, and the next run takes it over. A run that ends normally removes the file.
The file is opened without following a symbolic link at its name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from diffrun.errors import LockedError, UsageError

_READ_TRIES = 20
"""A holder writes its pid just after locking: a refused run rereads briefly for it."""


def lock_path(log: Path) -> Path:
    return log.parent / f".{log.name}.lock"


def _holder(fd: int) -> dict[str, Any]:
    for _ in range(_READ_TRIES):
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("pid"), int):
            return data
        time.sleep(0.01)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another diffrun run"
    where = "" if holder.get("host") in (None, socket.gethostname()) else f" on {str(holder['host'])[:100]}"
    return f"another diffrun run (pid {holder['pid']}{where})"


class LogLock:
    """`with LogLock(log):` holds the log for this process, or raises LockedError (exit 75)."""

    def __init__(self, log: Path) -> None:
        self.log = Path(log)
        self.path = lock_path(self.log)
        self._fd: int | None = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(f"{self.path} is a symbolic link; diffrun does not follow it",
                                 hint="remove it", code="symlink") from None
            raise UsageError(f"cannot write results log {self.log}: cannot create {self.path.name}: "
                             f"{exc.strerror or exc}", code="not_writable") from None

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockedError(f"results log {self.log} is in use by {_describe(holder)}",
                                  hint="wait for it to finish, or give this run another -o or --results") from None
            except OSError:
                os.close(fd)
                raise
            # The last holder may have removed the file between our open and our lock: then the lock is on
            # a file no one else can find, so start again with the one now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode() + b"\n"
        with contextlib.suppress(OSError):  # without the pid the lock still holds; refused runs say less
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path, follow_symlinks=False)):
                os.unlink(self.path)  # while still locked, so no one is left holding a removed file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> LogLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
