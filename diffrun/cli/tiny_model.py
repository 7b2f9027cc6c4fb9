"""`diffrun tiny-model DIR --kind KIND`: a tiny pipeline with seeded random weights, for tests and CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffrun.cli import console, options
from diffrun.errors import OutputExistsError, UsageError


def tiny_model(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write the model into.")],
    kind: Annotated[str, typer.Option("--kind", "-k", metavar="KIND", help="Which tiny pipeline: sd or svd.")] = "sd",
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the random weights.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=options.FLAG,
                                            help="Write into a folder that is not empty.")] = False,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Write a tiny diffusers pipeline (a few MB, seeded random weights, nothing downloaded)."""
    from diffrun import pipelines

    console.State.quiet = console.State.quiet or quiet
    if kind not in pipelines.TINY_KINDS:
        raise UsageError(f"unknown --kind {kind!r}", hint="choose one of: " + ", ".join(pipelines.TINY_KINDS))
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise OutputExistsError(f"{directory} exists and is not empty", hint="pass --overwrite or choose a new folder")
    path = pipelines.make_tiny_model(directory, kind=kind, seed=seed)
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    if json_out:
        console.emit_json({"path": str(path), "kind": kind, "seed": seed, "bytes": size})
    else:
        console.info(f"wrote tiny {kind} model to {path} ({size / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    app.command("tiny-model")(tiny_model)
