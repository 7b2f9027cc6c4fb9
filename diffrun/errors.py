"""Error types and the exit codes they map to: the one table scripts rely on."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    JOBS_FAILED = 1
    USAGE = 2
    INPUT = 3
    MODEL = 4
    OUT_OF_MEMORY = 5
    INTERRUPTED = 130
    INTERNAL = 70
    """A bug in diffrun (sysexits' EX_SOFTWARE); --debug shows the traceback."""


class DiffrunError(Exception):
    """An expected failure: printed as one line on stderr, no traceback, exit code `exit`."""

    exit: Exit = Exit.USAGE
    code: str = "usage"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(DiffrunError):
    """Bad options or arguments."""


class ManifestError(UsageError):
    """A batch manifest that cannot be run; `problems` lists (line, message) pairs."""

    code = "manifest"

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.problems = problems or []


class OutputExistsError(UsageError):
    code = "output_exists"


class InputError(DiffrunError, ValueError):
    """An input image could not be loaded; `source` is the shortened, credential-free reference."""

    exit = Exit.INPUT
    code = "input"

    def __init__(self, source: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{source}: {reason}" if source else reason, hint=hint)
        self.source = source
        self.reason = reason


class ModelError(DiffrunError):
    """The model could not be loaded, or cannot do the task asked of it."""

    exit = Exit.MODEL
    code = "model"


class TaskError(ModelError):
    code = "task"


class OutOfMemoryError(DiffrunError):
    exit = Exit.OUT_OF_MEMORY
    code = "out_of_memory"


class Interrupted(DiffrunError):
    exit = Exit.INTERRUPTED
    code = "interrupted"
