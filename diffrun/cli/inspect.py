"""`diffrun inspect REF...`: load every input without a model and report what it is.

The report is a result: the table (or, with --json, one JSON object per input and nothing else)
goes to stdout. Each failure is one `error:` line on stderr, with its hint.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from diffrun.cli import console, options
from diffrun.cli.groups import takes
from diffrun.errors import Exit
from diffrun.loaders.policy import FetchPolicy
from diffrun.units import format_size


@takes(policy=options.LOADING)
def inspect(
    refs: Annotated[list[str], typer.Argument(
        metavar="REF...", help="Paths, file:// or http(s) URLs, data: URIs, or - for stdin.")],
    workers: Annotated[int, typer.Option("--workers", min=1, envvar="DIFFRUN_INSPECT_WORKERS",
                                         help="Inputs loaded at once.")] = 8,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
    save_inputs: options.SaveInputs = None,
    policy: FetchPolicy = None,
) -> None:
    """Load inputs (no model needed) and print format, size, bytes and sha256 of each.

    The table goes to stdout (--json: one JSON object per input instead; -q: no table); errors go to
    stderr. Exit 0 when every input loaded, 3 when any failed.
    """
    from diffrun import loaders

    console.State.quiet = console.State.quiet or quiet
    table = Table("source", "format", "size", "mode", "bytes", "sha256", "status", box=None,
                  header_style="bold", pad_edge=False)
    failed = 0
    for result in loaders.load_many(refs, policy, save_dir=save_inputs, workers=workers):
        record = result.to_json()
        if json_out:
            console.emit_json(record)
        if not result.ok:
            failed += 1
            console.error(str(result.error), result.error.hint if result.error else None)
            table.add_row(_cell(result.source), "", "", "", _size(record["bytes"]), _digest(record["sha256"]),
                          f"[red]failed[/red] ({escape(record['code'] or 'input')})")
            continue
        if console.State.debug and result.input is not None:
            for note in result.input.notes:
                console.err.print(f"[dim]debug:[/dim] {_cell(result.source)}: {_cell(note)}")
        table.add_row(
            _cell(record["source"]), record["format"], f"{record['width']}x{record['height']}", record["mode"],
            _size(record["bytes"]), _digest(record["sha256"]), "[green]ok[/green]",
        )
    if not json_out and not console.State.quiet:
        console.report(table)
    if failed:
        raise typer.Exit(Exit.INPUT)


def _cell(text: str) -> str:
    return escape(console.clean(text))


def _size(n: int | None) -> str:
    return format_size(n) if n is not None else ""


def _digest(sha: str | None) -> str:
    return sha[:12] if sha else ""


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
