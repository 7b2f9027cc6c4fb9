"""The one stderr console the whole app shares: logs, tables, progress. stdout is for results only."""

from __future__ import annotations

import json
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

err = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    quiet: bool = False
    debug: bool = False


def info(message: str) -> None:
    if not State.quiet:
        err.print(escape(message))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str, hint: str | None = None) -> None:
    """One clear line (and an optional hint) on stderr, plain text when stderr is not a terminal."""
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    if hint:
        err.print(f"  [dim]hint:[/dim] {escape(hint)}")


def emit_json(obj: Any) -> None:
    """One JSON object on its own line on stdout, flushed at once (for pipes)."""
    sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def show_progress(force: bool = False) -> bool:
    return not State.quiet and (force or err.is_terminal)


class _StepsColumn(MofNCompleteColumn):
    """`3/20` once the total is known; nothing while it is not (a spinner says enough)."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.total is not None else Text("")


def make_progress(enabled: bool, *, transient: bool = True) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        _StepsColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
        disable=not enabled,
    )
