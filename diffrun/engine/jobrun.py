"""One job's flow, shared by `generate`, the local batch engine and the Ray engine:
inputs -> pipeline requests -> output files that carry their recipe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffrun import __version__, outputs
from diffrun.errors import DiffrunError, OutputCheckError, UsageError
from diffrun.jobs import CALL_ARGUMENTS, PER_PROMPT, Job, images_per_seed
from diffrun.loaders import FetchPolicy, LoadedInput, load_input
from diffrun.loaders.redact import display_ref, redact_url

if TYPE_CHECKING:
    from diffrun.pipelines import LoadedModel, Output, Request

MASK_ARGUMENTS = {"mask_image", "mask"}
"""Pipeline arguments whose images load as single-channel masks."""


@dataclass
class JobInputs:
    """A job's inputs, loaded and decoded, keyed by the pipeline argument they feed."""

    images: dict[str, list[LoadedInput]] = field(default_factory=dict)
    seconds: float = 0.0
    refs: dict[str, list[Any]] = field(default_factory=dict)
    """The references as the job gave them: recipes record these (redacted), not the shortened display."""

    def for_pipeline(self) -> dict[str, Any]:
        """Argument name -> PIL image, or a list of them when the job gave several."""
        return {name: [i.image for i in items] if len(items) > 1 else items[0].image
                for name, items in self.images.items()}

    def hashes(self) -> dict[str, list[str]]:
        return {name: [i.sha256 for i in items] for name, items in self.images.items()}

    def describe(self) -> dict[str, list[dict[str, Any]]]:
        """For recipes: each input's recorded source (see `recorded_source`) and sha256."""
        described: dict[str, list[dict[str, Any]]] = {}
        for name, items in self.images.items():
            refs = self.refs.get(name) or []
            described[name] = [{**recorded_source(refs[i] if i < len(refs) else item.source), "sha256": item.sha256}
                               for i, item in enumerate(items)]
        return described


def recorded_source(ref: Any) -> dict[str, Any]:
    """How a recipe records an input: {"source": ...}, plus "redacted": [...] when credentials were left out.

    URLs as scheme://host/path (their query only when no key is a credential; never user:password@ or the
    #fragment), local files by absolute path (a recipe reruns from any folder), data URIs, bytes and
    images by their shortened display form (their sha256 says what they were)."""
    if not isinstance(ref, str) or ref[:5].lower() == "data:" or ref.startswith("<"):
        return {"source": display_ref(ref)}
    if "://" in ref:
        source, removed = redact_url(ref)
        return {"source": source, "redacted": removed} if removed else {"source": source}
    if ref == "-":
        return {"source": ref}
    path = Path(ref).expanduser()
    return {"source": str(path.resolve()) if path.is_file() else ref}


_UNREPEATABLE = {"query": "a signed URL, recorded without its query", "data:": "a data: URI, recorded without its data",
                 "userinfo": "a URL with a user name and password, recorded without them",
                 "<": "bytes or an image passed in, recorded by sha256 only"}


def unrepeatable_inputs(recipe: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Inputs a recipe cannot load again: argument name -> (what it was, its recorded source).

    A signed URL is recorded without its signature and a data URI without its data, so `--from` asks
    for them again instead of fetching a URL that now answers 403 or decoding a shortened string."""
    found: dict[str, tuple[str, str]] = {}
    for name, items in (recipe.get("inputs") or {}).items():
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            source = str(item.get("source", ""))
            redacted = item.get("redacted") or []
            kind = next((key for key in ("query", "userinfo") if key in redacted), None)
            kind = kind or next((key for key in ("data:", "<") if source.lower().startswith(key)), None)
            if kind is not None:
                found.setdefault(name, (_UNREPEATABLE[kind], source))
    return found


def load_job_inputs(job: Job, policy: FetchPolicy, save_dir: Path | None = None) -> JobInputs:
    """Load every input of the job; the first one that fails raises InputError (exit 3)."""
    start = time.perf_counter()
    loaded: dict[str, list[LoadedInput]] = {}
    references = job.references()
    for name, refs in references.items():
        mode = "L" if name in MASK_ARGUMENTS else "RGB"
        loaded[name] = [load_input(ref, policy, mode=mode, save_dir=save_dir) for ref in refs]
    return JobInputs(loaded, time.perf_counter() - start, references)


def job_requests(job: Job, inputs: JobInputs) -> list[Request]:
    """One pipeline request per seed of the job."""
    from diffrun.pipelines import Request

    images = inputs.for_pipeline()
    return [Request(prompt=job.prompt, negative_prompt=job.negative_prompt, images=images,
                    args=job.call_arguments(), seed=seed) for seed in job.seeds]


def plan_job_outputs(job: Job, model_ref: str, kind: str, *, overwrite: bool,
                     default_dir: Path | None = None) -> list[str]:
    """Every target path of the job, seed-major; refuses existing files unless overwrite."""
    return outputs.plan_outputs(job.output, seeds=job.seeds, per_seed=images_per_seed(job), kind=kind,
                                model=model_ref, job_id=job.id, overwrite=overwrite, default_dir=default_dir)


def job_recipe(job: Job, model: LoadedModel, inputs: JobInputs, output: Output, seed: int, index: int) -> dict:
    """Everything needed to make this output again (`diffrun generate --from FILE`); `threads` because
    the CPU thread count can change the last bits of a CPU result."""
    from diffrun.pipelines.runtime import cpu_threads

    return {
        "diffrun_version": __version__,
        "job_id": job.id,
        "model": model.info.get("model"),
        "model_info": model.info,
        "pipeline": output.pipeline,
        "scheduler": model.info.get("scheduler"),
        "task": output.task,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": seed,
        "index": index,
        "args": output.call_args,
        "inputs": inputs.describe(),
        "input_arguments": output.input_arguments,
        "device": model.device,
        "dtype": model.dtype,
        "threads": cpu_threads(),
    }


def write_job_outputs(job: Job, model: LoadedModel, inputs: JobInputs, results: list[Output], targets: list[str],
                      *, quality: int | None = None, overwrite: bool = False, sidecar: bool = False,
                      fps: int | None = None) -> list[str]:
    """Write each seed's images or videos to its targets, each with its recipe; return the paths."""
    written: list[str] = []
    slots = iter(targets)
    for seed, output in zip(job.seeds, results, strict=True):
        items = output.videos or output.images
        for index, item in enumerate(items):
            target = next(slots)
            recipe = job_recipe(job, model, inputs, output, seed, index)
            if output.videos:
                rate = fps or job.fps or int(output.call_args.get("fps") or 8)
                path = outputs.write_video(item, target, recipe, fps=rate, quality=quality, overwrite=overwrite)
            else:
                path = outputs.write_image(item, target, recipe, quality=quality, overwrite=overwrite)
            if sidecar and path != "-":
                outputs.write_sidecar(path, recipe, overwrite=overwrite)
            written.append(path)
    return written


_ARGUMENT_FIELDS = {name: key for key, name in CALL_ARGUMENTS.items()}


def _bad_recipe(reason: str) -> UsageError:
    return UsageError(f"bad recipe: {reason}", hint="pass a file diffrun wrote, or its .json sidecar",
                      code="bad_recipe")


def _recipe_int(recipe: dict, key: str) -> int:
    value = recipe.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad_recipe(f"{key} must be a non-negative integer, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def job_from_recipe(recipe: dict) -> Job:
    """The Job that makes the recipe's one output again (inputs by their recorded source), for
    `generate --from`. Output `index` of seed S was drawn from generator S + index (pipelines.run), so
    the rerun is that seed with one output per prompt. A recipe that does not have the shape diffrun
    writes raises UsageError("bad recipe: ...")."""
    if not isinstance(recipe, dict):
        raise _bad_recipe(f"expected a JSON object, got {type(recipe).__name__}")
    for key in ("prompt", "negative_prompt", "model"):
        if recipe.get(key) is not None and not isinstance(recipe[key], str):
            raise _bad_recipe(f"{key} must be a string, got {_shown(recipe[key])}")
    job = Job(prompt=recipe.get("prompt"), negative_prompt=recipe.get("negative_prompt"))
    if recipe.get("seed") is not None:
        job.seeds = [_recipe_int(recipe, "seed") + _recipe_int(recipe, "index")]
    args = {} if recipe.get("args") is None else recipe["args"]
    if not isinstance(args, dict):
        raise _bad_recipe(f"args must be an object, got {_shown(args)}")
    for name, value in args.items():
        if name in ("prompt", "negative_prompt", *PER_PROMPT):
            continue
        if name in _ARGUMENT_FIELDS:
            key = _ARGUMENT_FIELDS[name]
            number = (int, float) if key in ("guidance", "strength") else int
            if value is not None and (isinstance(value, bool) or not isinstance(value, number)):
                kind = "a number" if key in ("guidance", "strength") else "an integer"
                raise _bad_recipe(f"args.{name} must be {kind}, got {_shown(value)}")
            setattr(job, key, value)
        else:
            job.params[name] = value
    inputs = {} if recipe.get("inputs") is None else recipe["inputs"]
    if not isinstance(inputs, dict):
        raise _bad_recipe(f"inputs must be an object, got {_shown(inputs)}")
    for name, items in inputs.items():
        if not isinstance(items, list) or not items or not all(
                isinstance(item, dict) and isinstance(item.get("source"), str) and item["source"] for item in items):
            raise _bad_recipe(f"inputs.{name} must be a list of {{\"source\": ...}} objects")
        refs = [item["source"] for item in items]
        if name == "image":
            job.image = refs
        elif name == "mask_image":
            job.mask = refs[0]
        else:
            job.inputs[name] = refs
    return job


def job_checks(job: Job, results: list[Output], written: list[str]) -> list[dict[str, Any]]:
    """Every failed output check of the job, each with the seed and written path of its output."""
    found: list[dict[str, Any]] = []
    position = 0
    for seed, output in zip(job.seeds, results, strict=True):
        checks = getattr(output, "checks", None) or []  # a server's outputs carry them the same way
        for check in checks:
            if check.get("ok", True):
                continue
            at = position + int(check.get("index", 0))
            found.append({**check, "seed": seed, "output": written[at] if at < len(written) else None})
        position += len(getattr(output, "videos", None) or getattr(output, "images", None) or [])
    return found


def check_failure(checks: list[dict[str, Any]], what: str) -> DiffrunError:
    """The OutputCheckError (exit 6, code output_check) for `--strict` when `checks` failed, naming the
    output file that failed (else `what`)."""
    from diffrun.pipelines.checks import describe

    first = describe(checks[0])
    more = f" (and {len(checks) - 1} more)" if len(checks) > 1 else ""
    where = checks[0].get("output") if isinstance(checks[0].get("output"), str) else what
    error = OutputCheckError(f"{where}: output check failed: {first}{more}",
                             hint="the file is written, to look at; without --strict this is a warning")
    error.checks = checks
    return error
