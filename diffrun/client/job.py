"""One Job on a server: inputs prepared here (local ones as bytes), pixels computed there, files written here.

The server answers with lossless PNGs of what the pipeline returned (`raw: true`) and the recipe; the
outputs, their names and their recipes are planned and written with `outputs/` exactly as a local run
writes them, so the files are the same as a cold `generate`'s for the same seed.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffrun import outputs
from diffrun.client.remote import bad_answer, post
from diffrun.client.transport import Server
from diffrun.engine.jobrun import MASK_ARGUMENTS, plan_job_outputs, recorded_source
from diffrun.jobs import PER_PROMPT, Job, images_per_seed
from diffrun.loaders import FetchPolicy, load_input
from diffrun.loaders.sources import classify

_TOP_LEVEL = {"num_inference_steps", "guidance_scale", "strength"}


@dataclass
class Prepared:
    """A job's inputs as the server gets them (argument -> references or data URIs), and how recipes record them."""

    refs: dict[str, list[str]] = field(default_factory=dict)
    described: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    """None where the server loads the input itself (a URL or data URI): its recipe says what it was."""
    seconds: float = 0.0


def prepare_inputs(job: Job, policy: FetchPolicy, save_inputs: Path | None) -> Prepared:
    """Local paths, file:// and stdin are read and checked here (a bad one is exit 3 before any request)
    and sent as data URIs of their exact bytes; URLs and data URIs go as they are, unless --save-inputs
    asks for their bytes on this disk, in which case they are fetched here and sent as bytes too."""
    start = time.perf_counter()
    prepared = Prepared()
    for name, refs in job.references().items():
        mode = "L" if name in MASK_ARGUMENTS else "RGB"
        for ref in refs:
            if save_inputs is None and classify(ref) in ("http", "data"):
                prepared.refs.setdefault(name, []).append(ref)
                prepared.described.setdefault(name, []).append(None)
                continue
            loaded = load_input(ref, policy, mode=mode, save_dir=save_inputs)
            mime = f"image/{loaded.format.lower()}" if loaded.format.isalnum() else "application/octet-stream"
            prepared.refs.setdefault(name, []).append(f"data:{mime};base64,{base64.b64encode(loaded.data).decode()}")
            prepared.described.setdefault(name, []).append({**recorded_source(ref), "sha256": loaded.sha256})
    prepared.seconds = time.perf_counter() - start
    return prepared


def input_options(policy: FetchPolicy) -> dict[str, Any]:
    """The client's loader options, for the server to apply where they tighten its own."""
    options: dict[str, Any] = {
        "timeout": policy.timeout, "deadline": policy.deadline, "retries": policy.retries,
        "max_input_bytes": policy.max_bytes, "max_pixels": policy.max_pixels,
        "background": "#{:02x}{:02x}{:02x}".format(*policy.background), "block_private": policy.block_private,
    }
    if policy.allow_hosts:
        options["allow_host"] = list(policy.allow_hosts)
    return {key: value for key, value in options.items() if value is not None}


def request(job: Job, seed: int, prepared: Prepared, policy: FetchPolicy) -> tuple[str, dict[str, Any]]:
    """(route, JSON body) for one seed of the job."""
    body: dict[str, Any] = {"seed": seed, "response_format": "b64_json",
                            "output_format": "png", "raw": True, "size": "auto", "input_options": input_options(policy)}
    if job.num_images is not None or images_per_seed(job) != 1:
        body["n"] = images_per_seed(job)
    if job.prompt is not None:
        body["prompt"] = job.prompt
    if job.negative_prompt is not None:
        body["negative_prompt"] = job.negative_prompt
    params = {}
    for name, value in job.call_arguments().items():
        if name in _TOP_LEVEL:
            body[name] = value
        elif name not in PER_PROMPT:
            params[name] = value
    if params:
        body["params"] = params
    refs = dict(prepared.refs)
    images, mask = refs.pop("image", None), refs.pop("mask_image", None)
    if refs:
        body["inputs"] = refs
    if images is None and mask is None:
        return "/v1/images/generations", body
    if images:
        body.update({"image": images[0]} if len(images) == 1 else {"images": images})
    if mask:
        body["mask"] = mask[0]
    return "/v1/images/edits", body


@dataclass
class Item:
    """One output as the server computed it: an image or a video's frames, and its recipe."""

    image: Image.Image | None
    frames: list[Image.Image] | None
    recipe: dict[str, Any]
    checks: list[dict[str, Any]] = field(default_factory=list)
    """The server's output checks of this item (blank, NaN/Inf, NSFW; protocol: `diffrun.checks`)."""


def parse_items(response: dict[str, Any], expected: int, server: Server) -> list[Item]:
    data = response.get("data")
    if not isinstance(data, list) or len(data) != expected:
        raise bad_answer(server, f"expected {expected} data item(s)")
    items = []
    for entry in data:
        info = entry.get("diffrun") if isinstance(entry, dict) else None
        recipe = info.get("recipe") if isinstance(info, dict) else None
        if not isinstance(recipe, dict):
            raise bad_answer(server, "a data item without diffrun.recipe")
        checks = [c for c in info.get("checks") or [] if isinstance(c, dict)] if isinstance(
            info.get("checks"), list) else []
        if isinstance(entry.get("frames_b64"), list):
            items.append(Item(None, [_png(frame, server) for frame in entry["frames_b64"]], recipe, checks))
        else:
            items.append(Item(_png(entry.get("b64_json"), server), None, recipe, checks))
    return items


def _png(value: Any, server: Server) -> Image.Image:
    if not isinstance(value, str):
        raise bad_answer(server, "no b64_json in a data item")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)), formats=["PNG"])
        image.load()
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError) as exc:
        raise bad_answer(server, f"an image that does not decode ({type(exc).__name__})") from None
    image.info.clear()  # the server's own metadata: the file gets the client's recipe, nothing else
    return image



def recipe_for(item: Item, job: Job, prepared: Prepared) -> dict[str, Any]:
    """The server's recipe with what only the client knows: the job id and how its inputs were given."""
    recipe = dict(item.recipe)
    recipe["job_id"] = job.id
    args = recipe.get("args")
    if isinstance(args, dict) and job.num_images is None and not any(name in job.params for name in PER_PROMPT):
        recipe["args"] = {k: v for k, v in args.items() if k not in PER_PROMPT or v != 1}  # n=1 is the default
    served = recipe.get("inputs") if isinstance(recipe.get("inputs"), dict) else {}
    inputs: dict[str, list[Any]] = {}
    for name, described in prepared.described.items():
        theirs = served.get(name) if isinstance(served.get(name), list) else []
        inputs[name] = [mine if mine is not None else (theirs[i] if i < len(theirs) else None)
                        for i, mine in enumerate(described)]
    recipe["inputs"] = inputs
    return recipe


def run_job(job: Job, server: Server, policy: FetchPolicy, prepared: Prepared, *, model: str,
            overwrite: bool, quality: int | None, sidecar: bool, bar: Any, task_id: Any,
            check: Callable[[], None]) -> dict[str, Any]:
    """Send every seed of `job` (its inputs `prepared` already), then write its outputs; the summary
    `generate --json` prints."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    timings["inputs"] = prepared.seconds
    check()
    if job.output not in (None, "-"):  # refuse to overwrite before any work (the kind is a guess here)
        guess = "video" if Path(job.output).suffix.lower() in (".mp4", ".gif") else "image"
        plan_job_outputs(job, model, guess, overwrite=overwrite)

    def on_event(event: dict[str, Any]) -> None:
        check()
        kind = event.get("event")
        if kind == "queued" and isinstance(event.get("position"), int):
            bar.update(task_id, description=f"queued ({event['position']} ahead)")
        elif kind == "status" and isinstance(event.get("text"), str):
            bar.update(task_id, description=event["text"][:80])
        elif kind == "step" and isinstance(event.get("step"), int) and isinstance(event.get("total"), int):
            bar.update(task_id, completed=event["step"], total=event["total"])

    results: list[list[Item]] = []
    infer_start = time.perf_counter()
    for seed in job.seeds:
        bar.update(task_id, description=f"seed {seed}", completed=0, total=None)
        route, body = request(job, seed, prepared, policy)
        results.append(parse_items(post(server, route, body, on_event), images_per_seed(job), server))
    timings["inference"] = time.perf_counter() - infer_start
    check()
    first = results[0][0].recipe
    task = str(first.get("task") or "")
    targets = plan_job_outputs(job, model, "video" if task.endswith("video") else "image", overwrite=overwrite)
    save_start = time.perf_counter()
    written = write_items(job, prepared, results, targets, quality=quality, overwrite=overwrite, sidecar=sidecar)
    timings["saving"] = time.perf_counter() - save_start
    timings["total"] = time.perf_counter() - start
    return {
        "status": "ok", "outputs": written, "seeds": job.seeds, "task": task, "model": first.get("model"),
        "pipeline": first.get("pipeline"), "scheduler": first.get("scheduler"), "device": first.get("device"),
        "dtype": first.get("dtype"), "threads": first.get("threads"),
        "inputs": recipe_for(results[0][0], job, prepared)["inputs"], "server": server.shown,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "checks": item_checks(job, results, written),
        "images": [item.image for items in results for item in items if item.image is not None],
    }


def item_checks(job: Job, results: list[list[Item]], written: list[str]) -> list[dict[str, Any]]:
    """Every failed output check, with its seed and written path, as jobrun.job_checks gives a local run's."""
    found: list[dict[str, Any]] = []
    position = 0
    for seed, items in zip(job.seeds, results, strict=True):
        for item in items:
            for check in item.checks:
                if check.get("ok", True) is False:
                    found.append({**check, "seed": seed, "output": written[position] if position < len(written)
                                  else None})
            position += 1
    return found


def write_items(job: Job, prepared: Prepared, results: list[list[Item]], targets: list[str], *,
                quality: int | None, overwrite: bool, sidecar: bool, fps: int | None = None) -> list[str]:
    """Each seed's items to its targets with their recipes, as jobrun.write_job_outputs writes a local run's."""
    written: list[str] = []
    slots = iter(targets)
    for items in results:
        for item in items:
            target = next(slots)
            recipe = recipe_for(item, job, prepared)
            if item.frames is not None:
                args = recipe.get("args") if isinstance(recipe.get("args"), dict) else {}
                rate = fps or job.fps or _int(args.get("fps")) or 8
                path = outputs.write_video(item.frames, target, recipe, fps=rate, quality=quality, overwrite=overwrite)
            else:
                path = outputs.write_image(item.image, target, recipe, quality=quality, overwrite=overwrite)
            if sidecar and path != "-":
                outputs.write_sidecar(path, recipe, overwrite=overwrite)
            written.append(path)
    return written


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10_000 else None
