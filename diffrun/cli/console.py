"""The two consoles: `err` (stderr) for logs, errors and progress; `out` (stdout) for reports.

stdout carries results only: image bytes, JSON, and reports (tables) through `report()`."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from diffrun.loaders.redact import redact_text


def stdout_is_terminal() -> bool:
    """True when stdout is a terminal (False when it is a file, a pipe, or closed)."""
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Stderr(io.TextIOBase):
    """sys.stderr as it is at each write (cstderr swaps it during a TIFF decode), where a write that
    fails (closed with 2>&-, a reader gone, 2>/dev/full) is dropped: logs never change a run's exit code."""

    @staticmethod
    def _target():
        # While a rich Live display runs, sys.stderr is rich's FileProxy, which prints through this very
        # console: writing to it from here would go round in a circle. Write to the file behind it.
        stream = sys.stderr
        return getattr(stream, "rich_proxied_file", stream)

    def write(self, text: str) -> int:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._target().write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._target().flush()

    def isatty(self) -> bool:
        try:
            stream = self._target()
            return stream is not None and stream.isatty()
        except (AttributeError, ValueError, OSError):
            return False

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"


class _ReportConsole(Console):
    """The stdout console: a reader gone away is BrokenPipeError (report() makes it StdoutClosed, exit
    141), where rich's default would exit 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError("stdout closed")


class ClosedStdout(io.TextIOBase):
    """What sys.stdout is when diffrun starts with fd 1 closed (`>&-`): every write is a broken pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError("stdout is closed")

    @property
    def buffer(self):  # type: ignore[override]
        raise BrokenPipeError("stdout is closed")

    def isatty(self) -> bool:
        return False


err = Console(file=_Stderr(), highlight=False, soft_wrap=True)
# Reports (tables of inspect, env, batch --dry-run, ...) are results: they go to stdout. Off a terminal
# nothing is cut at 80 columns (paths are what people grep for).
out = _ReportConsole(highlight=False, soft_wrap=True, width=None if stdout_is_terminal() else 100_000)

MAX_TEXT = 500
"""Longest outside string (path, URL, server text) shown in one message."""
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def clean(text: object, limit: int = MAX_TEXT) -> str:
    """An outside string made safe to print: control characters (ESC, CR, bidi overrides) replaced
    by `?`, capped at `limit` characters. Still needs `escape()` before rich markup."""
    shown = _CONTROL.sub("?", str(text))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def report(renderable: Any) -> None:
    """A report (table or text) on stdout; StdoutClosed when its reader has gone away."""
    from diffrun.errors import StdoutClosed

    try:
        out.print(renderable)
    except BrokenPipeError:
        raise StdoutClosed("stdout closed") from None


class State:
    quiet: bool = False
    debug: bool = False


def info(message: str) -> None:
    """A log line on stderr (not with -q), printed as plain text: outside strings in it are safe."""
    if not State.quiet:
        err.print(_line(message))


def _line(text: str) -> str:
    """One printable line for rich: URL credentials removed, controls replaced, capped, markup escaped."""
    return escape(clean(redact_text(text.replace("\n", " ").replace("\t", " ")), limit=2 * MAX_TEXT))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {_line(message)}")


MAX_DETAIL_LINES = 50


def error(message: str, hint: str | None = None) -> None:
    """One clear line (and an optional hint) on stderr, plain text when stderr is not a terminal.

    A message of several lines (a manifest's problems, one per line) keeps them apart, indented under
    the first, at most MAX_DETAIL_LINES of them."""
    first, *details = message.split("\n") or [""]
    err.print(f"[bold red]error:[/bold red] {_line(first)}")
    for detail in details[:MAX_DETAIL_LINES]:
        err.print(f"  {_line(detail.strip())}")
    if len(details) > MAX_DETAIL_LINES:
        err.print(f"  ... and {len(details) - MAX_DETAIL_LINES} more")
    if hint:
        err.print(f"  [dim]hint:[/dim] {_line(hint)}")


def emit_json(obj: Any) -> None:
    """One JSON object on its own line on stdout, flushed at once (for pipes).

    Raises StdoutClosed when the reader has gone away (`| head -n 1`): a command stops as on Ctrl-C.
    """
    from diffrun.errors import StdoutClosed

    try:
        sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed("stdout closed") from None


def show_progress(force: bool = False) -> bool:
    return not State.quiet and (force or err.is_terminal)


class PlainColumn(TextColumn):
    """A progress column showing a task's text as plain text (no markup), cleaned: descriptions and
    status fields carry outside strings (a model path, a Ray address)."""

    def __init__(self, text_format: str) -> None:
        super().__init__(text_format, markup=False)

    def render(self, task: Task) -> Text:
        return Text(clean(self.text_format.format(task=task).replace("\n", " ")))


class _StepsColumn(MofNCompleteColumn):
    """`3/20` once the total is known; nothing while it is not (a spinner says enough)."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.total is not None else Text("")


def make_progress(enabled: bool, *, transient: bool = True) -> Progress:
    """generate's progress: a bar on a terminal, plain lines (`--progress`) off one, nothing when not `enabled`."""
    from diffrun.cli import progress

    return progress.make(enabled, SpinnerColumn(), PlainColumn("{task.description}"), BarColumn(), _StepsColumn(),
                         TimeElapsedColumn(), unit="steps", transient=transient)
