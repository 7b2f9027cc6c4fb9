"""Which task a request asks for, which pipeline does it, and whether every argument fits its __call__.

Nothing here knows model names: a pipeline's abilities come from its __call__ signature, and a
pipeline that does not fit is switched with diffusers' AutoPipeline*.from_pipe (sharing weights).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from diffrun.errors import TaskError, UsageError
from diffrun.pipelines.models import LoadedModel, Request

TASKS = ("text-to-image", "image-to-image", "inpainting", "text-to-video", "image-to-video", "custom")

# Arguments diffrun sets itself on every call.
RESERVED = ("generator", "output_type", "return_dict", "callback_on_step_end",
            "callback_on_step_end_tensor_inputs", "callback", "callback_steps", "prompt", "negative_prompt")

# Same meaning, different name in some pipelines: requested name -> alternative the pipeline may take.
ALIASES = {"num_images_per_prompt": "num_videos_per_prompt"}

_AUTO_CLASSES = {
    "text-to-image": "AutoPipelineForText2Image",
    "image-to-image": "AutoPipelineForImage2Image",
    "inpainting": "AutoPipelineForInpainting",
}


def call_parameters(pipe: Any) -> tuple[set[str], bool]:
    """The names __call__ takes (of a pipeline or a pipeline class), and whether it passes any other
    keyword on (**kwargs).

    diffusers' own pipelines keep **kwargs only to pop deprecated arguments and drop the rest
    silently, so for them **kwargs does not count; custom (community) pipelines' does.
    """
    call = (pipe if isinstance(pipe, type) else type(pipe)).__call__
    params = inspect.signature(call).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    own = (getattr(call, "__module__", "") or "").startswith("diffusers.")
    return names, var_kw and not own


def is_video(pipe: Any) -> bool:
    return "num_frames" in call_parameters(pipe)[0]


def pipeline_task(pipe: Any) -> str:
    """The one task a pipeline's __call__ is shaped for."""
    names, _ = call_parameters(pipe)
    medium = "video" if "num_frames" in names else "image"
    if "mask_image" in names:
        return "inpainting"
    if "image" in names:
        return f"image-to-{medium}"
    if "prompt" in names:
        return f"text-to-{medium}"
    return "custom"


def wanted_task(pipe: Any, request: Request) -> str:
    """The task the request's inputs ask of a pipeline of `pipe`'s medium."""
    medium = "video" if is_video(pipe) else "image"
    if "mask_image" in request.images:
        return "inpainting"
    if "image" in request.images:
        return f"image-to-{medium}"
    return f"text-to-{medium}"


_SIBLING_INFIX = {"text-to-image": "", "image-to-image": "Img2Img", "inpainting": "Inpaint"}


def _sibling_class(pipe: Any, task: str) -> Any | None:
    """The same family's pipeline class for `task` by diffusers' naming (StableDiffusionPipeline ->
    StableDiffusionImg2ImgPipeline), when it exists and its __call__ fits. It is what AutoPipeline picks
    for these families, without importing AutoPipeline's table of every pipeline (about half a second)."""
    import diffusers

    name = type(pipe).__name__
    if task not in _SIBLING_INFIX or not name.endswith("Pipeline"):
        return None
    stem = name[: -len("Pipeline")]
    for infix in _SIBLING_INFIX.values():
        if infix and stem.endswith(infix):
            stem = stem[: -len(infix)]
    try:
        cls = getattr(diffusers, f"{stem}{_SIBLING_INFIX[task]}Pipeline")
    except (AttributeError, ImportError, RuntimeError):  # no such class, or one whose extras are missing
        return None
    if not isinstance(cls, type) or not hasattr(cls, "from_pipe"):
        return None
    return cls if pipeline_task(cls) == task else None


def _switch(pipe: Any, task: str, dtype: str) -> Any | None:
    """The family's sibling class (see _sibling_class), else AutoPipelineFor<task>, `.from_pipe(pipe)`;
    None where diffusers has no such pipeline for it.

    DiffusionPipeline.from_pipe casts the shared modules to its `dtype` argument (fp32 when left out);
    AutoPipeline's from_pipe ignores it today. Passing the loaded dtype keeps both paths from silently
    turning an fp16 model, original pipeline included, into fp32.
    """
    name = _AUTO_CLASSES.get(task)
    if name is None:
        return None
    import diffusers

    from diffrun.pipelines.loading import dtype_kwarg
    from diffrun.pipelines.runtime import torch_dtype

    kwargs = {dtype_kwarg(): torch_dtype(dtype)}
    # Candidates are resolved one at a time: AutoPipeline's import is only paid when the sibling fails.
    for candidate in (lambda: _sibling_class(pipe, task), lambda: getattr(diffusers, name)):
        cls = candidate()
        if cls is None:
            continue
        try:
            switched = cls.from_pipe(pipe, **kwargs)
        except (ValueError, KeyError, TypeError, AttributeError):  # diffusers' "no such pipeline" errors
            continue
        if hasattr(switched, "set_progress_bar_config"):
            switched.set_progress_bar_config(disable=True)
        return switched
    return None


def pipeline_for(model: LoadedModel, task: str) -> Any | None:
    """The loaded pipeline, or one switched to from it, that does `task`; cached on the model."""
    if pipeline_task(model.pipe) in (task, "custom"):
        return model.pipe
    if task not in model.pipes:
        switched = _switch(model.pipe, task, model.dtype)
        model.pipes[task] = switched if switched is not None and pipeline_task(switched) == task else None
    return model.pipes[task]


def abilities(model: LoadedModel) -> list[str]:
    """Every task the loaded model can do, directly or through from_pipe."""
    found = [pipeline_task(model.pipe)]
    medium = "video" if is_video(model.pipe) else "image"
    for task in (f"text-to-{medium}", f"image-to-{medium}", "inpainting"):
        if task not in found and pipeline_for(model, task) is not None:
            found.append(task)
    return [t for t in TASKS if t in found]


def adapt_args(pipe: Any, request: Request) -> dict[str, Any]:
    """request.args checked against pipe's __call__, with aliases renamed; unknown ones raise UsageError."""
    names, var_kw = call_parameters(pipe)
    cls = type(pipe).__name__
    if request.prompt is not None and "prompt" not in names:
        raise UsageError(f"{cls} does not take a prompt")
    if request.negative_prompt is not None and "negative_prompt" not in names:
        raise UsageError(f"{cls} does not take a negative prompt")
    for name in request.images:
        if name in RESERVED:
            raise UsageError(f"argument {name!r} cannot be an image")
        if name not in names and not var_kw:
            raise UsageError(f"{cls} does not take argument {name!r}")
    args: dict[str, Any] = {}
    for name, value in request.args.items():
        if name in SIZE_ARGS and name not in names and "image" in request.images:
            continue  # the pipeline takes its size from the image: resized_images() applies it there
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
    return args


SIZE_ARGS = ("width", "height")


def resized_images(pipe: Any, request: Request) -> dict[str, Any]:
    """request.images, with `image` cropped and resized to --width/--height when the pipeline itself
    takes no size (image-to-image pipelines size their output from the input)."""
    names, _ = call_parameters(pipe)
    width, height = (request.args.get(n) if n not in names else None for n in SIZE_ARGS)
    image = request.images.get("image")
    if not (width or height) or image is None or isinstance(image, (list, tuple)):
        return request.images
    from PIL import ImageOps

    w, h = image.size
    width = int(width or round(w * int(height) / h))
    height = int(height or round(h * width / w))
    size = (max(8, width // 8 * 8), max(8, height // 8 * 8))
    return {**request.images, "image": ImageOps.fit(image, size)}


def resolve(model: LoadedModel, request: Request) -> tuple[str, Any, dict[str, Any]]:
    """(task, pipeline to call, checked call arguments) for a request."""
    base_task = pipeline_task(model.pipe)
    task = "custom" if base_task == "custom" else wanted_task(model.pipe, request)
    pipe = pipeline_for(model, task)
    if pipe is None:
        can = ", ".join(abilities(model))
        raise TaskError(f"model '{model.options.model}' ({type(model.pipe).__name__}) cannot do {task}; "
                        f"it can do: {can}")
    return task, pipe, adapt_args(pipe, request)


def plan_task(model: LoadedModel, request: Request) -> str:
    """Check a request against the model without running it; returns the task it will run."""
    return resolve(model, request)[0]


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
