"""Which task a request asks for, which pipeline does it, and whether every argument fits its __call__.

Nothing here knows model names: a pipeline's abilities come from its __call__ signature, and a
pipeline that does not fit is switched to the same family's class for the task (see variants.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from diffrun.errors import TaskError, UsageError
from diffrun.pipelines import variants
from diffrun.pipelines.calls import (
    CONTROL,
    IMAGE_ROLES,
    call_defaults,
    call_parameters,
    image_arguments,
    is_controlled,
    is_video,
    pipeline_class,
    pipeline_task,
)
from diffrun.pipelines.models import LoadedModel, Request
from diffrun.pipelines.reference import shown
from diffrun.pipelines.sizes import SIZE_ARGS, sized_args

TASKS = ("text-to-image", "image-to-image", "inpainting", "text-to-video", "image-to-video", "custom")

# Arguments diffrun sets itself on every call.
RESERVED = ("generator", "output_type", "return_dict", "callback_on_step_end",
            "callback_on_step_end_tensor_inputs", "callback", "callback_steps", "prompt", "negative_prompt")

# Same meaning, different name in some pipelines: requested name -> alternative the pipeline may take.
ALIASES = {"num_images_per_prompt": "num_videos_per_prompt"}

_sibling_class = variants.sibling_class  # the name tests and older callers know


def wanted_task(pipe: Any, request: Request) -> str:
    """The task the request's inputs ask of a pipeline of `pipe`'s medium (a control image alone
    conditions a text-to-X task; it does not make one)."""
    medium = "video" if is_video(pipe) else "image"
    if "mask_image" in request.images:
        return "inpainting"
    if "image" in request.images:
        return f"image-to-{medium}"
    return f"text-to-{medium}"


def pipeline_for(model: LoadedModel, task: str) -> Any | None:
    """The loaded pipeline, or one switched to from it, that does `task`; cached on the model."""
    if pipeline_task(model.pipe) in (task, "custom"):
        return model.pipe
    if task not in model.pipes:
        model.pipes[task], model.refused[task] = variants.switch(model.pipe, task, model.dtype)
    return model.pipes[task]


def abilities(model: LoadedModel) -> list[str]:
    """Every task the loaded model can do, directly or through from_pipe."""
    found = [pipeline_task(model.pipe)]
    medium = "video" if is_video(model.pipe) else "image"
    for task in (f"text-to-{medium}", f"image-to-{medium}", "inpainting"):
        if task not in found and pipeline_for(model, task) is not None:
            found.append(task)
    return [t for t in TASKS if t in found]


def _check_images(pipe: Any, request: Request, names: set[str], var_kw: bool) -> dict[str, str]:
    """Input name -> the __call__ argument it feeds; UsageError for one the pipeline cannot take."""
    cls = pipeline_class(pipe).__name__
    roles = image_arguments(pipe)
    inputs: dict[str, str] = {}
    for name in request.images:
        if name in RESERVED:
            raise UsageError(f"argument {name!r} cannot be an image")
        if name in IMAGE_ROLES and name in names and name not in roles:
            raise UsageError(f"{cls} takes its control image as {roles[CONTROL]!r}, and no other {name!r}",
                             hint="give the control image with --input control_image=REF")
        target = roles.get(name, name)
        if target not in names and not var_kw:
            raise UsageError(f"{cls} does not take argument {name!r}")
        inputs[name] = target
    if is_controlled(pipe) and CONTROL in roles and CONTROL not in request.images:
        raise UsageError(f"{cls} needs a control image", hint="give it with --input control_image=REF")
    return inputs


def _check_denoising(pipe: Any, args: dict[str, Any]) -> None:
    """strength × steps below 1 leaves an image-to-image pipeline no step to run (diffusers then fails deep
    inside with an empty tensor): refuse it before the model runs."""
    names, _ = call_parameters(pipe)
    if "strength" not in names or "image" not in image_arguments(pipe):
        return
    if any(args.get(n) is not None for n in ("denoising_start", "timesteps", "sigmas")):
        return  # the pipeline is told its schedule another way
    defaults = call_defaults(pipe)
    try:
        strength = float(args.get("strength", defaults.get("strength")))
        steps = int(args.get("num_inference_steps", defaults.get("num_inference_steps")))
    except (TypeError, ValueError):
        return  # not numbers: the pipeline's own check says so
    if steps < 1 or int(steps * strength) >= 1:
        return
    which = "--steps" if "num_inference_steps" in args else f"the default {steps} steps of"
    message = (f"--strength {strength:g} × {which} {steps} = {steps * strength:g} leaves no denoising step "
               f"({pipeline_class(pipe).__name__} runs int(steps × strength) of them)")
    if strength <= 0:
        raise UsageError(message, hint="use a --strength above 0")
    raise UsageError(message, hint=f"use --steps {math.ceil(1 / strength - 1e-9)} or more, "
                                   f"or --strength {math.ceil(100 / steps) / 100:g} or more")


def check_call(pipe: Any, request: Request) -> tuple[dict[str, Any], dict[str, str]]:
    """(call arguments, input name -> argument) for `request` on `pipe` (a pipeline or its class), with
    aliases renamed; anything its __call__ cannot take raises UsageError."""
    names, var_kw = call_parameters(pipe)
    cls = pipeline_class(pipe).__name__
    if request.prompt is not None and "prompt" not in names:
        raise UsageError(f"{cls} does not take a prompt")
    if request.negative_prompt is not None and "negative_prompt" not in names:
        raise UsageError(f"{cls} does not take a negative prompt")
    inputs = _check_images(pipe, request, names, var_kw)
    args: dict[str, Any] = {}
    for name, value in request.args.items():
        if name in SIZE_ARGS and name not in names and "image" in request.images:
            continue  # the pipeline takes its size from the image: sizes.resized_images() applies it there
        if name in RESERVED:
            raise UsageError(f"argument {name!r} is set by diffrun, not by --param")
        if name in request.images:
            raise UsageError(f"argument {name!r} is given both as an image and as a parameter")
        target = name
        if name not in names and ALIASES.get(name) in names:
            target = ALIASES[name]
        elif name not in names and not var_kw:
            raise UsageError(f"{cls} does not take argument {name!r}")
        args[target] = value
    _check_denoising(pipe, args)
    return args, inputs


@dataclass
class Plan:
    """How one request runs: its task, the pipeline, the checked call arguments, and which argument
    each input image feeds (a ControlNet text-to-image class takes `control_image` as `image`)."""

    task: str
    pipe: Any
    args: dict[str, Any]
    inputs: dict[str, str]


def resolve(model: LoadedModel, request: Request) -> Plan:
    """The plan for a request: TaskError when no pipeline of the model does its task, UsageError for
    arguments that do not fit."""
    base_task = pipeline_task(model.pipe)
    task = "custom" if base_task == "custom" else wanted_task(model.pipe, request)
    pipe = pipeline_for(model, task)
    if pipe is None:
        can = ", ".join(abilities(model))
        refused = model.refused.get(task) or []
        raise TaskError(f"{shown(model.options.model)}: {type(model.pipe).__name__} cannot do {task}; "
                        f"it can do: {can}", hint="; ".join(refused[:2]) or None)
    args, inputs = check_call(pipe, request)
    return Plan(task, pipe, sized_args(pipe, request.images, args), inputs)


def plan_task(model: LoadedModel, request: Request) -> str:
    """Check a request against the model without running it; returns the task it will run."""
    return resolve(model, request).task


def _image_shape(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_image_shape(v) for v in value))
    size = getattr(value, "size", None)
    return tuple(size) if isinstance(size, tuple) else type(value).__name__


def batch_key(request: Request) -> tuple:
    """Requests with equal keys can share one run() call.

    A request with a list of images for one argument (e.g. several control images) runs alone: how a
    pipeline batches those differs from pipeline to pipeline.
    """
    images = tuple(sorted((name, _image_shape(value)) for name, value in request.images.items()))
    solo = any(isinstance(v, (list, tuple)) for v in request.images.values())
    args = json.dumps(request.args, sort_keys=True, default=repr)
    key: tuple = (request.prompt is not None, request.negative_prompt is not None, images, args)
    return (*key, ("solo", id(request))) if solo else key
