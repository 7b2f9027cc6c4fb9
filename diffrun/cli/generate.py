"""`diffrun generate`: one job, from the command line, inputs from anywhere, outputs with their recipe."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffrun.cli import checks as ch
from diffrun.cli import console, options
from diffrun.cli import job_options as jo
from diffrun.cli import model_options as mo
from diffrun.cli import server_options as so
from diffrun.cli.groups import takes
from diffrun.cli.options import OUTPUT, SAMPLING
from diffrun.client import RemoteOptions
from diffrun.errors import DiffrunError, InputError, UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES, Job
from diffrun.loaders.policy import FetchPolicy
from diffrun.loaders.redact import display_ref, log_message

if TYPE_CHECKING:  # a placeholder's type: the option group builds it (pipelines/ stays unimported)
    from diffrun.pipelines.models import ModelOptions


@takes(flags=jo.JOB_OPTIONS, files=jo.OUTPUT_FILES, runtime=mo.RUNTIME_OPTIONS, policy=options.LOADING,
       remote=so.REMOTE)
def generate(
    flags: Job,
    seed: Annotated[list[int] | None, typer.Option("--seed", "-s", metavar="N", rich_help_panel=SAMPLING,
                                                   help="Seed (repeatable: one output set per seed).")] = None,
    max_images: jo.MaxImages = DEFAULT_MAX_IMAGES,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", envvar="DIFFRUN_OUTPUT", metavar="PATH", rich_help_panel=OUTPUT,
        help="File, folder, name template ({seed} {index} {date} {time} {model}), "
             "or - for stdout (a pipe or file, not a terminal).")] = None,
    files: jo.OutputFiles = jo.OutputFiles(),
    from_: Annotated[Path | None, typer.Option(
        "--from", metavar="FILE",
        help="Rerun the recipe in a diffrun output (or its .json); flags override it.")] = None,
    runtime: ModelOptions = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
    progress: options.ProgressFlag = False,
    save_inputs: options.SaveInputs = None,
    policy: FetchPolicy = None,
    remote: RemoteOptions | None = None,
    strict: ch.Strict = False,
    expect: ch.Expect = None,
    tolerance: ch.TolerancePsnr = None,
    max_diff: ch.MaxDiff = None,
) -> None:
    """Run one job: text-to-image, image-to-image, inpainting or image-to-video, chosen from the inputs.

    Each output is checked (blank or single-colour, NaN/Inf, NSFW blackout): a warning, or with --strict
    exit 6; --expect GOLDEN.png compares the output with a golden image (exit 6 when too far off)."""
    console.State.quiet = console.State.quiet or quiet
    if json_out and output == "-":
        raise UsageError("--json and -o - both write to stdout; choose one")
    flags = replace(flags, seeds=list(seed or []), output=output)
    recipe_model, from_recipe = None, False
    if from_ is not None:
        job, recipe_model, from_recipe = _from_recipe(from_, flags)
    else:
        job = flags
    if job.output == "-" and console.stdout_is_terminal():  # as curl does: binary output would garble the terminal
        raise UsageError("-o -: stdout is a terminal, not a place for image bytes",
                         hint="redirect it (-o - > out.png, or -o - | next-command) or pass a file: -o out.png")
    if not job.seeds:
        job.seeds = [secrets.randbelow(2**32)]
    jo.check_job(job, max_images)
    limit = _expect_plan(job, expect, tolerance, max_diff)
    model_given = runtime.model
    if remote is None or remote.warm or runtime.model or recipe_model:  # --server needs no -m: the server has one
        runtime = mo.require_model(runtime, recipe_model)
    if from_recipe:  # inputs named by a recipe: local ones must be regular files outside /proc, /sys and /dev
        policy = replace(policy, regular_files_only=True)
    try:
        if remote is not None:
            summary = _run_remote(job, runtime, policy, remote, model_given=model_given, save_inputs=save_inputs,
                                  overwrite=files.overwrite, quality=files.quality, sidecar=files.sidecar,
                                  show=console.show_progress(progress))
        else:
            summary = _run(job, runtime, policy, save_inputs=save_inputs, overwrite=files.overwrite,
                           quality=files.quality, sidecar=files.sidecar, show=console.show_progress(progress))
    except DiffrunError as exc:
        if json_out:
            console.emit_json({"status": "error", "exit": int(exc.exit), "error": log_message(exc.message),
                               "seeds": job.seeds})
        raise
    failure = _checked(summary, job, strict=strict, expect=expect, limit=limit)
    if json_out:
        console.emit_json(summary)
    if failure is not None:
        raise failure
    if not json_out:
        for path in summary["outputs"]:
            if path != "-":
                console.info(f"wrote {path}")
        console.info(f"seed {', '.join(map(str, job.seeds))}; {summary['timings']['total']:.1f} s")


def _expect_plan(job: Job, expect: Path | None, tolerance: float | None, max_diff: int | None):
    """The --expect tolerance; the golden is read now (exit 3 before any model loads), one output only."""
    if expect is None:  # --tolerance alone (or DIFFRUN_TOLERANCE set for compare) does nothing here
        return None
    from diffrun.jobs import images_per_seed
    from diffrun.outputs.compare import load_pixels  # numpy: only when there is a golden to read

    limit = ch.tolerance_from(tolerance, max_diff)
    if len(job.seeds) * images_per_seed(job) != 1:
        raise UsageError("--expect compares one output; give one --seed and no --num-images",
                         hint="for several outputs, run `diffrun compare` on the folder")
    try:
        load_pixels(expect)
    except InputError as exc:  # say where the path came from: it is not one of the job's inputs
        raise InputError(f"--expect {exc.source}", exc.reason, hint=exc.hint, code=exc.code) from None
    return limit


def _checked(summary: dict, job: Job, *, strict: bool, expect: Path | None, limit) -> DiffrunError | None:
    """Warn about failed output checks (or, with --strict, fail: exit 6); compare with --expect. The
    summary gets `checks` (and `expect`); on failure its status becomes error, as other failures'."""
    from diffrun.engine.jobrun import check_failure
    from diffrun.errors import OutputCheckError
    from diffrun.outputs.compare import check_expected, table_line

    failure: DiffrunError | None = None
    checks = summary.get("checks") or []
    if checks and strict:
        failure = check_failure(checks, summary["outputs"][0] if summary["outputs"] else "generate")
    elif checks:
        ch.warn_checks(checks, "generate")
    if expect is not None and summary.get("images"):
        path = summary["outputs"][0]
        comparison = check_expected(summary["images"][0] if path == "-" else path, expect, limit)
        summary["expect"] = comparison.row()
        if comparison.ok:
            console.info(f"matches {expect}: {table_line(comparison).split(': ', 1)[1]}")
        if not comparison.ok and failure is None:
            failure = OutputCheckError(f"--expect {expect}: {path} {table_line(comparison).split(': ', 1)[1]}, "
                                       f"wanted {limit.describe()}",
                                       hint="look at it with: diffrun compare OUTPUT GOLDEN --diff heat.png",
                                       code="expect_mismatch")
    summary.pop("images", None)
    if failure is not None:
        summary.update(status="error", exit=int(failure.exit), error=log_message(failure.message), code=failure.code)
    return failure


def _from_recipe(path: Path, flags: Job) -> tuple[Job, str | None, bool]:
    """The recipe's job with every flag the user gave laid over it, its model, and whether some input
    still comes from the recipe (not replaced by a flag)."""
    from diffrun import outputs
    from diffrun.engine.jobrun import job_from_recipe, unrepeatable_inputs

    recipe = outputs.read_recipe(path)
    job = job_from_recipe(recipe)
    from_recipe = any(getattr(job, key) and not getattr(flags, key) for key in ("image", "mask", "inputs"))
    for name, value in vars(flags).items():
        if value not in (None, [], {}):
            if name == "params":
                job.params.update(value)
            else:
                setattr(job, name, value)
    given = {"image": bool(flags.image), "mask_image": bool(flags.mask)}
    for name, (what, source) in unrepeatable_inputs(recipe).items():
        if not given.get(name, name in flags.inputs):
            flag = _INPUT_FLAGS.get(name, f"--input {name}=REF")
            raise UsageError(
                f"--from {path}: input {name} was {what} ({display_ref(source)})", hint=f"give it again: {flag}")
    return job, recipe.get("model"), from_recipe


_INPUT_FLAGS = {"image": "-i/--image REF", "mask_image": "--mask REF"}


def _check_folders(job: Job, save_inputs: Path | None) -> None:
    """The output's folder (a file or template's fixed leading folder) and --save-inputs are writable (exit 2)."""
    from diffrun.outputs.atomic import check_writable

    if job.output not in (None, "-"):
        fixed = job.output.split("{", 1)[0]
        target = Path(fixed).expanduser()
        folder = target if job.output.endswith(("/", os.sep)) or target.is_dir() else target.parent
        check_writable(folder, "output folder")
    if save_inputs is not None:
        check_writable(save_inputs.expanduser(), "--save-inputs folder")


def _run(job: Job, runtime, policy, *, save_inputs: Path | None, overwrite: bool, quality: int | None,
         sidecar: bool, show: bool) -> dict:
    """The model reference, the inputs (a bad one fails before the model loads), the model, the pipeline, the files."""
    from diffrun import pipelines
    from diffrun.engine import jobrun, signals
    from diffrun.pipelines.reference import check_model_ref
    from diffrun.pipelines.runtime import cpu_threads

    check_model_ref(runtime.model, runtime.revision)  # first: a stat or a cache look, no torch, no network
    _check_folders(job, save_inputs)  # as batch does: a folder that cannot be written fails before any work
    # A first Ctrl-C/SIGTERM raises KeyboardInterrupt wherever the main thread is (cli/app.py installs
    # engine/signals.py); these checks catch one that library code swallowed, at each phase and step.
    timings: dict[str, float] = {}
    start = time.perf_counter()
    inputs = jobrun.load_job_inputs(job, policy, save_inputs)
    timings["inputs"] = inputs.seconds
    signals.check()
    if job.output not in (None, "-"):
        # Refuse to overwrite before spending time on the model (the kind is only a guess here).
        guess = "video" if Path(job.output).suffix.lower() in (".mp4", ".gif") else "image"
        jobrun.plan_job_outputs(job, runtime.model, guess, overwrite=overwrite)
    with console.make_progress(show) as bar:
        task_id = bar.add_task("loading model", total=None)
        requests = jobrun.job_requests(job, inputs)
        pipelines.precheck(runtime, requests[0])  # before the weights load
        model = pipelines.load_model(runtime, on_progress=lambda text: bar.update(task_id, description=text))
        timings["model_load"] = model.load_seconds
        signals.check()
        task = pipelines.plan_task(model, requests[0])
        kind = "video" if task.endswith("video") else "image"
        targets = jobrun.plan_job_outputs(job, runtime.model, kind, overwrite=overwrite)
        results = []
        infer_start = time.perf_counter()

        def on_step(step: int, total: int) -> None:
            signals.check()  # the step boundary: a stop here leaves nothing half-done
            bar.update(task_id, completed=step, total=total)

        for request in requests:
            bar.update(task_id, description=f"{task} seed {request.seed}", completed=0, total=None)
            results.extend(pipelines.run(model, [request], on_step=on_step))
        timings["inference"] = time.perf_counter() - infer_start
    signals.check()
    save_start = time.perf_counter()
    written = jobrun.write_job_outputs(job, model, inputs, results, targets, quality=quality, overwrite=overwrite,
                                       sidecar=sidecar)
    timings["saving"] = time.perf_counter() - save_start
    timings["total"] = time.perf_counter() - start
    return {
        "status": "ok", "outputs": written, "seeds": job.seeds, "task": task, "model": model.info.get("model"),
        "pipeline": results[0].pipeline, "scheduler": model.info.get("scheduler"), "device": model.device,
        "dtype": model.dtype, "threads": cpu_threads(), "inputs": inputs.describe(),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "checks": jobrun.job_checks(job, results, written),
        "images": [image for output in results for image in output.images],
    }


def _run_remote(job: Job, runtime, policy, remote, *, model_given: str | None, save_inputs: Path | None,
                overwrite: bool, quality: int | None, sidecar: bool, show: bool) -> dict:
    """The job on a server (--server, --warm): the same checks first, the same files after."""
    from diffrun.client.run import run_generate
    from diffrun.engine import signals

    _check_folders(job, save_inputs)
    with console.make_progress(show) as bar:
        return run_generate(job, runtime, policy, remote, model_given=model_given, save_inputs=save_inputs,
                            overwrite=overwrite, quality=quality, sidecar=sidecar, bar=bar, say=console.warn,
                            check=signals.check)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
