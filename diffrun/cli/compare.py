"""`diffrun compare A B`: images, folders, or a results log against goldens, within a tolerance.

Like diff and cmp: exit 0 when every pair is within the tolerance, 1 when one is not (or is missing
on one side), 2 for usage errors, 3 when an image cannot be loaded. The report goes to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffrun.cli import console, options
from diffrun.cli.checks import MaxDiff, TolerancePsnr, tolerance_from
from diffrun.errors import Exit, UsageError

if TYPE_CHECKING:
    from diffrun.outputs.compare import Comparison


def _log_outputs(path: Path) -> dict[str, list[str]]:
    """Job id -> its outputs, from the last ok/failed line of each job (a failed job has none)."""
    from diffrun.engine.results import read_records, settled

    records = read_records(path)
    if not records:
        raise UsageError(f"compare: {path} has no results-log records", code="compare_usage")
    return {job_id: [p for p in (record.get("outputs") or []) if isinstance(p, str)] if record["status"] == "ok"
            else [] for job_id, record in settled(records).items()}


def _write_heat(comparison: Comparison, target: Path, overwrite: bool) -> None:
    from PIL import Image

    from diffrun.outputs.atomic import atomic_write

    image = Image.fromarray(comparison.heat)
    atomic_write(target, lambda f: image.save(f, format="PNG"), overwrite=overwrite)


def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="Image, folder, or results log (.jsonl).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="Image or folder (of goldens, for a results log).")],
    tolerance: TolerancePsnr = None,
    max_diff: MaxDiff = None,
    diff: Annotated[Path | None, typer.Option(
        "--diff", metavar="OUT.png",
        help="Write a heat map of where the images differ (for folders: a folder, one per differing pair).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar=options.FLAG,
                                            help="Replace an existing --diff file.")] = False,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Compare two images, two folders (matched by name), or a results log with a folder of goldens ({id}.png).

    Reports max and mean absolute difference (0-255), PSNR and SSIM.

    Exit 0 within the tolerance, 1 not (or missing on one side), 2 usage error, 3 an image cannot be loaded.
    """
    from diffrun.outputs.compare import compare_all, is_log, json_line, table_line

    console.State.quiet = console.State.quiet or quiet
    limit = tolerance_from(tolerance, max_diff)
    for path in (a, b):
        if not path.exists():
            from diffrun.errors import InputError

            raise InputError(str(path)[:200], "no such file or folder", code="not_found")
    log_outputs = _log_outputs(a) if is_log(a) and b.is_dir() else None
    results = compare_all(a, b, limit, want_heat=diff is not None, log_outputs=log_outputs)
    if diff is not None:
        single = len(results) == 1 and not a.is_dir()
        if not single:
            diff.mkdir(parents=True, exist_ok=True)
        for c in results:
            if c.heat is not None and (single or c.status != "same"):
                _write_heat(c, diff if single else diff / (Path(c.name).stem + ".png"), overwrite)
    for c in results:
        print(json_line(c) if json_out else table_line(c), flush=True)
    bad = [c for c in results if not c.ok]
    if not console.State.quiet:
        console.info(f"{len(results) - len(bad)} of {len(results)} within {limit.describe()}")
    if bad or not results:
        raise typer.Exit(Exit.JOBS_FAILED)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
