"""`diffrun inspect REF...`: load every input without a model and report what it is."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from diffrun.cli import console, options
from diffrun.errors import Exit
from diffrun.units import format_size


def inspect(
    refs: Annotated[list[str], typer.Argument(
        metavar="REF...", help="Paths, file:// or http(s) URLs, data: URIs, or - for stdin.")],
    workers: Annotated[int, typer.Option("--workers", min=1, envvar="DIFFRUN_WORKERS",
                                         help="Inputs loaded at once.")] = 8,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
    save_inputs: options.SaveInputs = None,
    timeout: options.Timeout = "30",
    deadline: options.Deadline = "120",
    retries: options.Retries = 3,
    max_input_bytes: options.MaxInputBytes = "50MB",
    max_pixels: options.MaxPixels = options.DEFAULT_MAX_PIXELS,
    background: options.Background = "white",
    allow_host: options.AllowHost = None,
    block_private: options.BlockPrivate = False,
) -> None:
    """Load inputs (no model needed) and print format, size, bytes and sha256 of each.

    Exit 0 when every input loaded, 3 when any failed.
    """
    from diffrun import loaders

    console.State.quiet = console.State.quiet or quiet
    policy = options.fetch_policy(
        timeout=timeout, deadline=deadline, retries=retries, max_input_bytes=max_input_bytes,
        max_pixels=max_pixels, background=background, allow_host=allow_host, block_private=block_private,
    )
    table = Table("source", "format", "size", "mode", "bytes", "sha256", "status", box=None, header_style="bold")
    failed = 0
    for result in loaders.load_many(refs, policy, save_dir=save_inputs, workers=workers):
        record = result.to_json()
        if json_out:
            console.emit_json(record)
        if not result.ok:
            failed += 1
            console.error(str(result.error))
            table.add_row(result.source, "", "", "", "", "", "[red]failed[/red]")
            continue
        table.add_row(
            record["source"], record["format"], f"{record['width']}x{record['height']}", record["mode"],
            format_size(record["bytes"]), record["sha256"][:12], "[green]ok[/green]",
        )
    if not json_out and not console.State.quiet:
        console.err.print(table)
    if failed:
        raise typer.Exit(Exit.INPUT)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
