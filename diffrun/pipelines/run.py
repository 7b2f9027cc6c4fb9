"""Run a micro-batch of requests through one pipeline call."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from diffrun.errors import OutOfMemoryError, UsageError
from diffrun.pipelines.calls import call_parameters
from diffrun.pipelines.models import LoadedModel, Output, Request
from diffrun.pipelines.runtime import first_line, is_out_of_memory
from diffrun.pipelines.sizes import SIZE_ARGS, resized_images
from diffrun.pipelines.tasks import Plan, batch_key, resolve

OOM_HINT = "try --offload model, --vae-tiling, or a smaller --width/--height"


def _per_request(args: dict[str, Any], names: set[str]) -> int:
    """How many outputs one request yields (num_images_per_prompt / num_videos_per_prompt)."""
    for name in ("num_images_per_prompt", "num_videos_per_prompt"):
        if name in args and name in names:
            return max(1, int(args[name] or 1))
    return 1


def _generators(requests: list[Request], count: int) -> list[Any]:
    """One CPU generator per output, seeded seed, seed+1, ...: a request's noise never depends on its
    batch companions, and CPU generators give the same noise on every device."""
    import torch

    return [torch.Generator("cpu").manual_seed(r.seed + k) for r in requests for k in range(count)]


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        return repr(value)


def run(model: LoadedModel, requests: list[Request],
        on_step: Callable[[int, int], None] | None = None) -> list[Output]:
    """Run `requests` in ONE pipeline call; outputs come back in request order."""
    import torch

    if not requests:
        return []
    keys = {batch_key(r) for r in requests}
    if len(keys) != 1:
        raise ValueError("requests in one run() call must share a batch_key (same task, arguments and inputs)")
    plan = resolve(model, requests[0])
    pipe, args = plan.pipe, plan.args
    names, _ = call_parameters(pipe)
    count = _per_request(args, names)
    kwargs: dict[str, Any] = dict(args)
    first = requests[0]
    if first.prompt is not None:
        kwargs["prompt"] = [r.prompt for r in requests]
    if first.negative_prompt is not None:
        kwargs["negative_prompt"] = [r.negative_prompt for r in requests]
    images = [resized_images(pipe, r.images, r.args) for r in requests]
    for name in first.images:
        values = [i[name] for i in images]
        kwargs[plan.inputs.get(name, name)] = values[0] if len(values) == 1 else values
    if "generator" in names:
        kwargs["generator"] = _generators(requests, count)
    if "output_type" in names:  # floats, so NaN/Inf can be seen; made PIL in checks.py as diffusers would
        kwargs["output_type"] = "np"
    if on_step is not None and "callback_on_step_end" in names:
        default_total = int(args.get("num_inference_steps") or 0)

        def callback(p: Any, step: int, _timestep: Any, callback_kwargs: dict) -> dict:
            total = getattr(p, "_num_timesteps", None) or default_total
            on_step(step + 1, int(total))
            return callback_kwargs

        kwargs["callback_on_step_end"] = callback
    try:
        with torch.inference_mode():
            result = pipe(**kwargs)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemoryError(f"out of memory on {model.device} running {type(pipe).__name__}",
                                   hint=OOM_HINT) from exc
        if isinstance(exc, (ValueError, TypeError, IndexError, KeyError)):  # e.g. clip_skip past the layers
            raise UsageError(f"{type(pipe).__name__} rejected the arguments: {first_line(exc)}") from exc
        raise
    return _outputs(result, requests, plan, count)


def _outputs(result: Any, requests: list[Request], plan: Plan, count: int) -> list[Output]:
    from diffrun.pipelines.checks import convert_images, convert_videos

    args = plan.args
    frames = getattr(result, "frames", None)
    videos: list[list[Any]] | None = None
    if frames is not None:
        videos, checks = convert_videos(frames)
        images: list[Any] = []
    else:
        images, checks = convert_images(getattr(result, "images", None), getattr(result, "nsfw_content_detected", None))
    outputs = []
    for i, request in enumerate(requests):
        call_args = {k: _jsonable(v) for k, v in args.items()}
        for name in SIZE_ARGS:  # applied to the input image when the pipeline takes no size: still recorded
            if name in request.args:
                call_args.setdefault(name, request.args[name])
        if request.prompt is not None:
            call_args["prompt"] = request.prompt
        if request.negative_prompt is not None:
            call_args["negative_prompt"] = request.negative_prompt
        part = slice(i * count, (i + 1) * count)
        outputs.append(Output(
            images=images[part],
            videos=[list(v) for v in videos[part]] if videos is not None else [],
            task=plan.task,
            pipeline=type(plan.pipe).__name__,
            call_args=call_args,
            input_arguments=dict(plan.inputs),
            checks=[{**check, "index": check["index"] - part.start}
                    for found in checks[part] for check in found],
        ))
    return outputs
