"""Error types and the exit codes they map to: the one table scripts rely on."""

from __future__ import annotations

import errno
from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    JOBS_FAILED = 1
    USAGE = 2
    INPUT = 3
    MODEL = 4
    OUT_OF_MEMORY = 5
    OUTPUT_CHECK = 6
    """An output check failed under --strict (blank, NaN/Inf, NSFW), or --expect found the output too far off."""
    UNAVAILABLE = 69
    """The server (`--server`, `--warm`) cannot be reached or is not ready (sysexits' EX_UNAVAILABLE)."""
    INTERNAL = 70
    """A bug in diffrun (sysexits' EX_SOFTWARE); --debug shows the traceback."""
    IO = 74
    """Disk full or another I/O error writing outputs or logs (sysexits' EX_IOERR)."""
    LOCKED = 75
    """Another run holds the results log: try again later (sysexits' EX_TEMPFAIL)."""
    INTERRUPTED = 130
    STDOUT_CLOSED = 141
    """The reader of stdout went away (128 + SIGPIPE, as a shell reports a process ended by it)."""


class DiffrunError(Exception):
    """An expected failure: printed as one line on stderr, no traceback, exit code `exit`.

    `category` is the broad kind (usage, manifest, input, model, ...); `code` the stable,
    machine-readable name of this failure (for inputs: not_found, http_status, too_large, ...),
    which defaults to the category. Both go into JSON output and results logs.
    """

    exit: Exit = Exit.USAGE
    category: str = "usage"
    code: str = "usage"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UsageError(DiffrunError):
    """Bad options or arguments."""


class ManifestError(UsageError):
    """A batch manifest that cannot be run; `problems` lists (line, message) pairs."""

    category = code = "manifest"

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.problems = problems or []


class OutputExistsError(UsageError):
    category = code = "output_exists"


class InputError(DiffrunError, ValueError):
    """An input image could not be loaded; `source` is the shortened, credential-free reference."""

    exit = Exit.INPUT
    category = code = "input"

    def __init__(self, source: str, reason: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(f"{source}: {reason}" if source else reason, hint=hint, code=code)
        self.source = source
        self.reason = reason


class ModelError(DiffrunError):
    """The model could not be loaded, or cannot do the task asked of it."""

    exit = Exit.MODEL
    category = code = "model"


class TaskError(ModelError):
    category = code = "task"


class OutOfMemoryError(DiffrunError):
    exit = Exit.OUT_OF_MEMORY
    category = code = "out_of_memory"


class OutputCheckError(DiffrunError):
    """An output failed a check under --strict, or differs from its --expect golden (exit 6)."""

    exit = Exit.OUTPUT_CHECK
    category = code = "output_check"


class ServerUnavailable(DiffrunError):
    """A `--server`/`--warm` server that cannot be reached, or is not ready in time (exit 69)."""

    exit = Exit.UNAVAILABLE
    category = code = "server_unavailable"


class DiskError(DiffrunError):
    """Disk full, or an output/log that cannot be written (exit 74)."""

    exit = Exit.IO
    category = code = "io"


class LockedError(DiffrunError):
    """Another run holds the results log (exit 75)."""

    exit = Exit.LOCKED
    category = code = "locked"


class Interrupted(DiffrunError):
    exit = Exit.INTERRUPTED
    category = code = "interrupted"


class StdoutClosed(DiffrunError):
    """stdout was closed by its reader: stop like Ctrl-C, print nothing, exit 141."""

    exit = Exit.STDOUT_CLOSED
    category = code = "stdout_closed"


class QueueFullError(DiffrunError):
    """`diffrun serve`: the request queue is full (HTTP 429 with Retry-After)."""

    exit = Exit.LOCKED
    category = code = "queue_full"


class AuthError(DiffrunError):
    """`diffrun serve`: a missing or wrong API key (HTTP 401)."""

    exit = Exit.USAGE
    category = code = "unauthorized"


class UnavailableError(DiffrunError):
    """`diffrun serve`: loading, draining or stopped before the request ran (HTTP 503)."""

    exit = Exit.LOCKED
    category = code = "unavailable"


HTTP_STATUS: dict[type[DiffrunError], int] = {
    AuthError: 401,
    QueueFullError: 429,
    UnavailableError: 503,
    OutOfMemoryError: 503,
    InputError: 400,
    UsageError: 400,
    TaskError: 400,
    ModelError: 500,
    DiskError: 500,
    LockedError: 503,
    Interrupted: 503,
}
"""`diffrun serve`: the HTTP status of each error type, most specific first (a bug is 500)."""


def http_status(exc: BaseException) -> int:
    """The HTTP status `diffrun serve` answers for `exc` (500 for anything not listed: a bug)."""
    for cls, status in HTTP_STATUS.items():
        if isinstance(exc, cls):
            return status
    return 500


_DISK_FULL = {errno.ENOSPC: "disk full", getattr(errno, "EDQUOT", errno.ENOSPC): "disk quota exceeded"}
_DISK_BROKEN = {errno.EIO, errno.EROFS}
DISK_FULL_HINT = "free some space, then run the same command again (a batch resumes where it stopped)"


def disk_error(path: object, exc: OSError) -> DiskError | None:
    """The DiskError (exit 74) for a write of `path` that failed because the disk is full or broken;
    None for any other failure (a permission, a missing folder: the caller's own error)."""
    if exc.errno in _DISK_FULL:
        return DiskError(f"{_DISK_FULL[exc.errno]}: cannot write {path}", hint=DISK_FULL_HINT, code="disk_full")
    if exc.errno in _DISK_BROKEN:
        return DiskError(f"cannot write {path}: {exc.strerror or exc}", code="io")
    return None
