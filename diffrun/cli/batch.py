"""`diffrun batch MANIFEST`: many jobs, one model load, inputs prefetched, a results log, resume."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from diffrun.cli import checks as ch
from diffrun.cli import console, options
from diffrun.cli import job_options as jo
from diffrun.cli import model_options as mo
from diffrun.cli import server_options as so
from diffrun.cli.console import clean
from diffrun.cli.groups import takes
from diffrun.cli.options import FLAG, OUTPUT, SAMPLING
from diffrun.cli.progress import make as make_progress
from diffrun.client import RemoteOptions
from diffrun.errors import Exit, Interrupted, UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES, Job
from diffrun.loaders.policy import FetchPolicy
from diffrun.outputs.names import template_fields

if TYPE_CHECKING:  # a placeholder's type: the option group builds it (pipelines/ stays unimported)
    from diffrun.pipelines.models import ModelOptions

BATCH = "Batch"
RAY = "Engine"
DEFAULT_OUTPUT = "diffrun-batch"


def output_plan(output: str | None, results: Path | None) -> tuple[Path, str | None, Path]:
    """(output folder, name template or None, results log) from -o and --results.

    `-o` is a folder unless it holds a `{field}`; then it is every job's name template and must hold
    `{id}`. The results log defaults to results.jsonl in the folder (a template's fixed leading folder).
    """
    text = output or DEFAULT_OUTPUT
    if text == "-":
        raise UsageError("batch cannot write to stdout (-o -)", hint="give an output folder or a name template")
    template = None
    if "{" in text:
        template_fields(text)  # only bare fields: a format spec could build a name of any size
        if "{id}" not in text:
            raise UsageError(f"-o {text!r}: a batch name template needs {{id}} so jobs do not clash")
        template = os.path.abspath(os.path.expanduser(text))
        folder = Path(os.path.dirname(template.split("{", 1)[0]) or ".")
    else:
        folder = Path(text).expanduser().resolve()
    if results is None:
        log = folder / "results.jsonl"
    else:  # the folder resolved, the name kept: a symbolic link there is refused, not followed
        log = results.expanduser().absolute()
        log = log.parent.resolve() / log.name
    return folder, template, log


def check_manifest_is_not_log(manifest: str, log: Path) -> None:
    """`batch results.jsonl -o .` would append to the manifest it reads: refuse it (exit 2)."""
    if manifest == "-":
        return
    try:
        same = os.path.samefile(manifest, log)
    except OSError:  # either is missing: they cannot be one file
        return
    if same:
        raise UsageError(f"the results log {log} is the manifest {manifest}",
                         hint="give the run another -o folder or --results file")


@takes(flags=jo.JOB_OPTIONS, files=jo.OUTPUT_FILES, runtime=mo.RUNTIME_OPTIONS, policy=options.LOADING,
       remote=so.REMOTE)
def batch(
    ctx: typer.Context,
    manifest: Annotated[str, typer.Argument(metavar="MANIFEST", help="JSON Lines or CSV manifest, or - for stdin.")],
    flags: Job = None,
    seed: Annotated[list[int] | None, typer.Option(
        "--seed", "-s", metavar="N", rich_help_panel=SAMPLING,
        help="Base seed: a row without a seed gets SEED + its index (default 0; repeatable).")] = None,
    max_images: jo.MaxImages = DEFAULT_MAX_IMAGES,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", envvar="DIFFRUN_OUTPUT", metavar="DIR", rich_help_panel=OUTPUT,
        help=f"Output folder (files named {{id}}.png), or a name template with {{id}} \\[default: {DEFAULT_OUTPUT}]."
    )] = None,
    files: jo.OutputFiles = jo.OutputFiles(),
    results: Annotated[Path | None, typer.Option(
        "--results", envvar="DIFFRUN_RESULTS", metavar="FILE", rich_help_panel=BATCH,
        help="Results log, one JSON line per job \\[default: results.jsonl in the output folder].")] = None,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1, envvar="DIFFRUN_PREFETCH", metavar="N",
                                          rich_help_panel=BATCH,
                                          help="Jobs whose inputs are loaded ahead of inference.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, envvar="DIFFRUN_BATCH_SIZE", metavar="N",
                                            rich_help_panel=BATCH,
                                            help="Compatible consecutive jobs run in one pipeline call.")] = 1,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", metavar=FLAG, rich_help_panel=BATCH,
                                               help="Also rerun jobs the results log records as failed.")] = False,
    force: Annotated[bool, typer.Option("--force", metavar=FLAG, rich_help_panel=BATCH,
                                        help="Rerun every job, replacing its own outputs (not other files).")]
    = False,
    allow_outside_output: Annotated[bool, typer.Option(
        "--allow-outside-output", envvar="DIFFRUN_ALLOW_OUTSIDE_OUTPUT", metavar=FLAG, rich_help_panel=OUTPUT,
        help="Let a row's output name files outside the output folder (-o).")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", metavar=FLAG, rich_help_panel=BATCH,
                                            help="Stop at the first failed job.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", metavar=FLAG, rich_help_panel=BATCH,
                                          help="Check the manifest and load every input; no model, no files.")]
    = False,
    manifest_format: Annotated[str, typer.Option("--manifest-format", metavar="FORMAT", rich_help_panel=BATCH,
                                                 help="auto, jsonl or csv.")] = "auto",
    engine_name: Annotated[str, typer.Option("--engine", envvar="DIFFRUN_ENGINE", metavar="ENGINE", rich_help_panel=RAY,
                                             help="local (this process) or ray (Ray Data; pip install "
                                                  "'diffrun\\[ray]').")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="DIFFRUN_RAY_ADDRESS", metavar="ADDRESS", rich_help_panel=RAY,
        help="Ray cluster to join: auto (the one running here) or HOST:PORT "
             "\\[default: $RAY_ADDRESS, else a local Ray for the run].")]
    = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, envvar="DIFFRUN_WORKERS", metavar="N", rich_help_panel=RAY,
        help="Ray inference actors, each loading the model once \\[default: one per GPU, else 1].")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        "--gpus-per-worker", min=0.0, envvar="DIFFRUN_GPUS_PER_WORKER", metavar="GPUS", rich_help_panel=RAY,
        help="GPUs per Ray actor (fractions share a GPU) \\[default: 1 when the cluster has GPUs, else 0].")] = None,
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", min=1, envvar="DIFFRUN_CONCURRENCY", metavar="N", rich_help_panel=so.SERVER,
        help="With --server/--warm: jobs in flight at once \\[default: the server's max batch].")] = None,
    remote: RemoteOptions | None = None,
    runtime: ModelOptions = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressFlag = False,
    save_inputs: options.SaveInputs = None,
    policy: FetchPolicy = None,
    strict: ch.Strict = False,
    junit: Annotated[Path | None, typer.Option(
        "--junit", envvar="DIFFRUN_JUNIT", metavar="FILE", rich_help_panel=ch.CHECKS,
        help="Also write a JUnit XML report, one test case per job (replaced each run).")] = None,
) -> None:
    """Run every row of a manifest (JSON Lines or CSV) with one model load.

    Options give every row its defaults.

    Each job ends as one line in the results log; the same command again skips the jobs already done.

    Exit 0 all ok, 1 some failed, 2 bad manifest or an output folder that cannot be written, 3 (--dry-run)
    some inputs failed, 74 disk full, 75 another run holds the results log, 130 interrupted, 141 stdout
    closed.
    """
    from diffrun.engine import batch as engine
    from diffrun.engine import resume
    from diffrun.engine.signals import StopRequested
    from diffrun.errors import StdoutClosed
    from diffrun.manifest import load_manifest
    from diffrun.pipelines.reference import check_model_ref

    console.State.quiet = console.State.quiet or quiet
    if remote is not None and engine_name == "ray":
        raise UsageError("--engine ray and --server/--warm both say where jobs run; give one")
    ray_options = _ray_options(engine_name, *_given_on_command_line(ctx, engine_name, ray_address=ray_address,
                                                                   workers=workers, gpus_per_worker=gpus_per_worker))
    if concurrency is not None and remote is None:
        raise UsageError("--concurrency is an option of --server and --warm")
    if manifest_format not in ("auto", "jsonl", "csv"):
        raise UsageError(f"--manifest-format: {manifest_format!r} is not one of auto, jsonl, csv")
    folder, template, log_path = output_plan(output, results)
    check_manifest_is_not_log(manifest, log_path)
    defaults = replace(flags, seeds=list(seed or []), output=template)
    jo.check_job(defaults, max_images)
    if "-" in defaults.image or defaults.mask == "-":
        raise UsageError("batch inputs cannot come from stdin (-)")
    # Every job comes from a manifest row: local inputs must be regular files outside /proc, /sys and /dev.
    policy = replace(policy, regular_files_only=True)
    jobs = load_manifest(manifest, defaults=defaults, fmt=None if manifest_format == "auto" else manifest_format,
                         output_dir=folder, allow_outside_output=allow_outside_output, max_images=max_images).jobs
    show = console.show_progress(progress)
    served = remote is not None and remote.server is not None  # --server needs no -m: the server has one
    runtime = None if (dry_run or served) and not runtime.model else mo.require_model(runtime)
    if dry_run:
        if runtime is not None:  # a dry run with -m checks the reference too: a CI typo in -m fails here
            check_model_ref(runtime.model, runtime.revision)
        # Which jobs changed since their last run needs the model settings: with -m, the same as a run's.
        settings = resume.run_settings(runtime, output_dir=folder, quality=files.quality, fps=flags.fps)
        prints = resume.fingerprints(jobs, settings) if runtime is not None else None
        _dry_run(engine, jobs, policy, log_path, retry_failed, force, prefetch, json_out, prints)
        return
    config = engine.BatchConfig(
        model=runtime, policy=policy, output_dir=folder, results=log_path, prefetch=prefetch, batch_size=batch_size,
        overwrite=files.overwrite, quality=files.quality, sidecar=files.sidecar, fps=flags.fps, save_inputs=save_inputs,
        retry_failed=retry_failed, force=force, fail_fast=fail_fast,
        allow_outside_output=allow_outside_output, strict=strict,
    )
    if junit is not None:
        from diffrun.outputs.atomic import check_writable

        check_writable(junit.expanduser().absolute().parent, "--junit folder")
    records: list[dict[str, Any]] = []
    if not served:
        check_model_ref(config.model.model, config.model.revision)  # before inputs, torch or Ray start
    stdout_closed = False
    with StopRequested() as stop, _progress(show) as bar:
        task = bar.add_task("jobs", total=len(jobs), ok=0, failed=0, skipped=0, status="")

        def on_result(record: dict[str, Any]) -> None:
            nonlocal stdout_closed
            if json_out and not stdout_closed:
                try:
                    console.emit_json(record)
                except StdoutClosed:  # `| head`: stop as Ctrl-C does; this record is already logged
                    stdout_closed = True
            counts = {k: bar.tasks[0].fields[k] for k in ("ok", "failed", "skipped")}
            counts[record["status"]] += 1
            bar.update(task, advance=1, **counts)
            records.append(record)
            if record["status"] == "failed":
                bar.console.print(f"[red]failed[/red] {escape(clean(record['id']))}: "
                                  f"{escape(clean(record['error']['message']))}", markup=True, highlight=False)
            elif record["status"] == "ok":
                for check in record.get("checks") or []:
                    bar.console.print(f"[yellow]warning:[/yellow] {escape(clean(record['id']))}: output check "
                                      f"failed: {escape(clean(ch.describe(check)))}", markup=True, highlight=False)

        hooks = {"should_stop": lambda: stop.requested or stdout_closed, "on_result": on_result,
                 "on_status": lambda text: bar.update(task, status=text)}
        try:
            if remote is not None:
                from diffrun.client.run import run_batch as run_remote_batch

                summary = run_remote_batch(jobs, config, remote, runtime, concurrency=concurrency, say=console.warn,
                                           **hooks)
            elif ray_options is None:
                summary = engine.run_batch(jobs, config, **hooks)
            else:
                from diffrun.engine.ray_engine import run_ray_batch

                summary = run_ray_batch(jobs, config, ray_options, **hooks)
        finally:  # what ran is reported, also when the run stops early
            if junit is not None:
                _write_junit(junit, records, log_path, manifest)
    if stdout_closed:  # the reader went away: what ran is logged, the rest is left for a rerun
        raise StdoutClosed("stdout closed")
    # The summary is a log of the run, not its result (that is the results log and --json): stderr.
    if not console.State.quiet:
        console.err.print(summary_table(summary))
        console.info(f"results: {log_path}")
    if summary.failed_earlier:  # why a rerun that skipped everything still exits 1, even with -q
        console.error(*failed_earlier_note(summary.failed_earlier))
    if summary.interrupted:
        raise Interrupted(f"interrupted: {_jobs(summary.not_run)} not run", hint="run the same command again to resume")
    if not summary.all_ok:
        raise typer.Exit(Exit.JOBS_FAILED)


def _write_junit(path: Path, records: list[dict[str, Any]], log_path: Path, manifest: str) -> None:
    from diffrun.engine.junit import write_junit
    from diffrun.engine.results import read_records, settled

    suite = "diffrun.batch" if manifest == "-" else f"diffrun.batch.{Path(manifest).stem}"
    write_junit(path.expanduser(), records, suite=suite, earlier=settled(read_records(log_path)))


def _given_on_command_line(ctx: typer.Context, engine: str, **values: Any) -> list[Any]:
    """The Ray options' values; for the local engine, those that came from the environment dropped: a
    DIFFRUN_WORKERS exported for Ray runs must not make a local run refuse to start."""
    if engine == "local":
        return [None if _source(ctx, name) == "ENVIRONMENT" else value for name, value in values.items()]
    return list(values.values())


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


def _ray_options(engine: str, address: str | None, workers: int | None, gpus: float | None) -> Any:
    """RayOptions for `--engine ray` (UsageError with the install command when Ray is missing); None for local."""
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine: {engine!r} is not one of local, ray")
    if engine == "local":
        given = [flag for flag, value in (("--ray-address", address), ("--workers", workers),
                                          ("--gpus-per-worker", gpus)) if value is not None]
        if given:
            raise UsageError(f"{given[0]} is an option of the Ray engine", hint="add --engine ray")
        return None
    from diffrun.engine.ray_engine import RayOptions, require_ray

    require_ray()
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.2f} jobs/s" if task.speed else "", style="cyan")


def _progress(show: bool) -> Progress:
    """A bar on a terminal; plain lines off one (`--progress`); nothing when not `show`."""
    return make_progress(
        show, console.PlainColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} ok[/green] [red]{task.fields[failed]} failed[/red] "
                   "{task.fields[skipped]} skipped"),
        _RateColumn(), TimeRemainingColumn(), console.PlainColumn("{task.fields[status]}"),
        detail=_counts,
    )


def _counts(task: Task) -> str:
    return f"{task.fields['ok']} ok, {task.fields['failed']} failed, {task.fields['skipped']} skipped"


def summary_table(summary: Any) -> Table:
    """Jobs by status, images written, and where the time went."""
    seconds = summary.seconds
    rate = (summary.ok + summary.failed) / seconds["total"] if seconds["total"] > 0 else 0.0
    table = Table(title="batch summary", box=None, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("jobs ok", str(summary.ok)), ("jobs failed", str(summary.failed)), ("jobs skipped", str(summary.skipped)),
        *([("jobs changed since the last run (redone)", str(summary.changed))] if summary.changed else []),
        *([("  failed in an earlier run", str(len(summary.failed_earlier)))] if summary.failed_earlier else []),
        ("jobs not run", str(summary.not_run)), ("images written", str(summary.images)),
        ("fetching (overlapped)", f"{seconds['fetching']:.2f} s"),
        ("waiting for inputs", f"{seconds['waiting']:.2f} s"),
        ("model loading", f"{seconds['model_load']:.2f} s"), ("inference", f"{seconds['inference']:.2f} s"),
        ("writing", f"{seconds['writing']:.2f} s"), ("total", f"{seconds['total']:.2f} s ({rate:.2f} jobs/s)"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def failed_earlier_note(ids: list[str], shown: int = 10) -> tuple[str, str]:
    """(message, hint) naming the jobs skipped because an earlier run recorded them failed."""
    names = ", ".join(clean(i, 100) for i in ids[:shown])
    if len(ids) > shown:
        names += f" and {len(ids) - shown} more"
    if len(ids) == 1:
        return (f"1 job failed in an earlier run and was skipped: {names}",
                "rerun it with --retry-failed (its error is in the results log)")
    return (f"{len(ids)} jobs failed in an earlier run and were skipped: {names}",
            "rerun them with --retry-failed (their errors are in the results log)")


def _dry_run(engine: Any, jobs: list[Job], policy: Any, log_path: Path, retry_failed: bool, force: bool,
             prefetch: int, json_out: bool, prints: dict[str, str] | None) -> None:
    """The check as a report on stdout (a table, or with --json one line per job); the count line on stderr."""
    table = Table("id", "action", "inputs", "error", box=None, header_style="bold", pad_edge=False)

    def on_result(record: dict[str, Any]) -> None:
        if json_out:
            console.emit_json(record)
        error = record.get("error", {}).get("message", "")
        table.add_row(escape(clean(record["id"])), record["action"], "[green]ok[/green]" if record["status"] == "ok"
                      else "[red]failed[/red]", escape(clean(error.replace("\n", " "))))

    records = engine.dry_run(jobs, policy, results=log_path, retry_failed=retry_failed, force=force,
                             prefetch=prefetch, on_result=on_result, prints=prints)
    failed = [r for r in records if r["status"] != "ok"]
    would_run = sum(r["action"] == "run" for r in records)
    if not json_out:
        console.report(table)
    console.info(f"{_jobs(len(records))}: {would_run} would run, {len(records) - would_run} would be skipped; "
                 f"{len(failed)} with inputs that fail")
    changed = sum(bool(r.get("changed")) for r in records)
    if changed:
        console.info(f"{changed} of them changed since the last run: they would be redone")
    if failed:
        raise typer.Exit(Exit.INPUT)


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
