"""The results log: append-only JSON Lines, one line per job as it ends, each line flushed and fsync'd.

Reading tolerates what a killed writer leaves behind (a truncated last line, stray garbage): such
lines are ignored, and the next append starts on a fresh line. The state of a job is its last line
whose status is not `skipped` (a `skipped` line only says a later run found the job already settled).

The log is never opened through a symbolic link at its name (O_NOFOLLOW): a planted link would make
diffrun append to, or resume from, whatever file it points at. A log that cannot be written is a
DiskError (exit 74): the batch stops, with what was done already on disk.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diffrun.errors import DiffrunError, DiskError, UsageError

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (OK, FAILED, SKIPPED)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A FIFO or device at the log's path must not block the open (a FIFO without a reader would hang the run).
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _open_regular(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses (UsageError, exit 2) anything but a regular file, without blocking on it."""
    fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"results log {path} is not a regular file", hint="give --results a file path",
                         code="not_a_file")
    return fd


def _open_error(path: Path, exc: OSError, *, writing: bool = False) -> DiffrunError:
    """A symbolic link is a usage error (exit 2); a log that cannot be written mid-run a DiskError (74)."""
    from diffrun.outputs.atomic import write_error

    if exc.errno == errno.ELOOP:
        return UsageError(f"results log {path} is a symbolic link; diffrun does not follow it",
                          hint="remove the link, or give --results another path", code="symlink")
    error = write_error(f"results log {path}", exc)
    if writing and not isinstance(error, DiskError):
        return DiskError(error.message, code="io")
    return error


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record of the log, in order; a missing file is an empty log."""
    try:
        fd = _open_regular(Path(path), os.O_RDONLY)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _open_error(Path(path), exc) from None
        raise UsageError(f"cannot read results log {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line cut short by a kill, or not ours
        if isinstance(record, dict) and isinstance(record.get("id"), str) and record.get("status") in STATUSES:
            records.append(record)
    return records


def settled(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Job id -> its last `ok` or `failed` record (later lines win)."""
    state: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["status"] != SKIPPED:
            state[record["id"]] = record
    return state


def is_done(record: dict[str, Any] | None) -> bool:
    """Recorded ok and every recorded output still on disk."""
    if not record or record.get("status") != OK:
        return False
    outputs = record.get("outputs") or []
    return bool(outputs) and all(isinstance(p, str) and os.path.exists(p) for p in outputs)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ResultsLog:
    """Appends one JSON line per call, durably; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: int | None = None
        self.lines_written = 0

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = _open_regular(self.path, flags)  # held open for the whole run, closed in close()
        try:
            size = os.fstat(fd).st_size
            if size > 0:
                read_fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
                try:
                    last = os.pread(read_fd, 1, size - 1)
                finally:
                    os.close(read_fd)
                if last != b"\n":  # the last run was killed mid-line: start a fresh one
                    os.write(fd, b"\n")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def check(self) -> None:
        """Refuse a log that is a symbolic link, or that exists and cannot be appended to; no file is made."""
        try:
            fd = _open_regular(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):  # ENXIO: a FIFO nobody reads
                if exc.errno == errno.ENXIO:
                    raise UsageError(f"results log {self.path} is not a regular file",
                                     hint="give --results a file path", code="not_a_file") from None
                raise _open_error(self.path, exc) from None
            raise UsageError(f"results log {self.path} is not writable: {exc.strerror or exc}",
                             code="not_writable") from None
        os.close(fd)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            try:
                if self._file is None:
                    self._file = self._open()
                written = os.write(self._file, line)
                if written != len(line):  # a short write to a regular file: the disk filled up mid-line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(self._file)
            except OSError as exc:
                raise _open_error(self.path, exc, writing=True) from None
            self.lines_written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
