"""One job's flow, shared by `generate`, the local batch engine and the Ray engine:
inputs -> pipeline requests -> output files that carry their recipe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffrun import __version__, outputs
from diffrun.errors import UsageError
from diffrun.jobs import CALL_ARGUMENTS, PER_PROMPT, Job, images_per_seed
from diffrun.loaders import FetchPolicy, LoadedInput, load_input

if TYPE_CHECKING:
    from diffrun.pipelines import LoadedModel, Output, Request

MASK_ARGUMENTS = {"mask_image", "mask"}
"""Pipeline arguments whose images load as single-channel masks."""


@dataclass
class JobInputs:
    """A job's inputs, loaded and decoded, keyed by the pipeline argument they feed."""

    images: dict[str, list[LoadedInput]] = field(default_factory=dict)
    seconds: float = 0.0

    def for_pipeline(self) -> dict[str, Any]:
        """Argument name -> PIL image, or a list of them when the job gave several."""
        return {name: [i.image for i in items] if len(items) > 1 else items[0].image
                for name, items in self.images.items()}

    def hashes(self) -> dict[str, list[str]]:
        return {name: [i.sha256 for i in items] for name, items in self.images.items()}

    def describe(self) -> dict[str, list[dict[str, str]]]:
        """For recipes: each input's shown source and sha256."""
        return {name: [{"source": _absolute(i.source), "sha256": i.sha256} for i in items]
                for name, items in self.images.items()}


def _absolute(source: str) -> str:
    """Local files are recorded by absolute path, so a recipe reruns from any folder."""
    if "://" in source or source.startswith(("data:", "<")) or source == "-":
        return source
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_file() else source


def load_job_inputs(job: Job, policy: FetchPolicy, save_dir: Path | None = None) -> JobInputs:
    """Load every input of the job; the first one that fails raises InputError (exit 3)."""
    start = time.perf_counter()
    loaded: dict[str, list[LoadedInput]] = {}
    for name, refs in job.references().items():
        mode = "L" if name in MASK_ARGUMENTS else "RGB"
        loaded[name] = [load_input(ref, policy, mode=mode, save_dir=save_dir) for ref in refs]
    return JobInputs(loaded, time.perf_counter() - start)


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
    """Everything needed to make this output again (`diffrun generate --from FILE`)."""
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
        "device": model.device,
        "dtype": model.dtype,
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
