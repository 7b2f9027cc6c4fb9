"""Output-check options shared by `generate`, `batch` and `compare`, and how a command reports checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from diffrun.cli import console
from diffrun.cli.options import FLAG
from diffrun.errors import UsageError
from diffrun.outputs.tolerance import DEFAULT_PSNR, Tolerance

CHECKS = "Output checks"

Strict = Annotated[bool, typer.Option(
    "--strict", envvar="DIFFRUN_STRICT", metavar=FLAG, rich_help_panel=CHECKS,
    help="A failed output check (blank or single-colour, NaN/Inf, NSFW blackout) is an error, exit 6 "
         "(batch: a failed job), not a warning.")]
Expect = Annotated[Path | None, typer.Option(
    "--expect", metavar="GOLDEN.png", rich_help_panel=CHECKS,
    help="Compare the output with this image; exit 6 when outside --tolerance / --max-diff.")]
TolerancePsnr = Annotated[float | None, typer.Option(
    "--tolerance", envvar="DIFFRUN_TOLERANCE", metavar="DB", min=0.0, rich_help_panel=CHECKS,
    help=f"Minimum PSNR in dB for images to count as the same \\[default: {DEFAULT_PSNR:g}].")]
MaxDiff = Annotated[int | None, typer.Option(
    "--max-diff", envvar="DIFFRUN_MAX_DIFF", metavar="N", min=0, max=255, rich_help_panel=CHECKS,
    help="Instead of --tolerance: the largest absolute difference allowed in any channel (0-255).")]


def tolerance_from(min_psnr: float | None, max_diff: int | None) -> Tolerance:
    """--tolerance or --max-diff (not both) as a Tolerance."""
    if min_psnr is not None and max_diff is not None:
        raise UsageError("--tolerance and --max-diff are alternatives; give one", code="compare_usage")
    return Tolerance(min_psnr=DEFAULT_PSNR if min_psnr is None else min_psnr, max_diff=max_diff)


def describe(check: dict[str, Any]) -> str:
    """A failed check in words (pipelines/checks.py, imported when a check has failed: it needs numpy)."""
    from diffrun.pipelines.checks import describe as in_words

    return in_words(check)


def warn_checks(checks: list[dict[str, Any]], what: str) -> None:
    """One warning line per failed check on stderr (shown even with -q: a warning is not a log line)."""
    for check in checks:
        where = check.get("output") or what
        console.warn(f"{where}: output check failed: {describe(check)}")
