"""The same family's pipeline class for another task, switched to with `from_pipe` (weights shared).

Candidates come from diffusers' own naming (LTXPipeline -> LTXImageToVideoPipeline,
StableDiffusionControlNetPipeline -> StableDiffusionControlNetImg2ImgPipeline) and, where that finds
none, from AutoPipeline's registry. A candidate is used only when it fits the loaded model: every
component it needs is there with the class its __init__ declares, and a one-step dry run on a tiny
input gets through the denoiser (an image-to-video class that needs a transformer made for it, as
CogVideoX's does, fails there with a shape error instead of crashing or making garbage later).
"""

from __future__ import annotations

import inspect
from typing import Any

from diffrun.pipelines.calls import call_parameters, image_arguments, pipeline_class, pipeline_task

TASK_INFIXES: dict[str, tuple[str, ...]] = {
    "text-to-image": ("",),
    "text-to-video": ("",),
    "image-to-image": ("Img2Img", "Image2Image"),
    "inpainting": ("Inpaint", "Inpainting"),
    "image-to-video": ("ImageToVideo", "Image2Video"),
}

_REGISTRY = {
    "text-to-image": "AUTO_TEXT2IMAGE_PIPELINES_MAPPING",
    "image-to-image": "AUTO_IMAGE2IMAGE_PIPELINES_MAPPING",
    "inpainting": "AUTO_INPAINT_PIPELINES_MAPPING",
    "text-to-video": "AUTO_TEXT2VIDEO_PIPELINES_MAPPING",
    "image-to-video": "AUTO_IMAGE2VIDEO_PIPELINES_MAPPING",
}


def family_stem(name: str) -> str | None:
    """A pipeline class name without "Pipeline" and its task infix: StableDiffusionControlNetImg2ImgPipeline
    -> StableDiffusionControlNet. None for names outside diffusers' naming (and modular pipelines)."""
    if not name.endswith("Pipeline") or name.endswith("ModularPipeline"):
        return None
    stem = name[: -len("Pipeline")]
    for infix in sorted({i for infixes in TASK_INFIXES.values() for i in infixes if i}, key=len, reverse=True):
        if stem.endswith(infix):
            return stem[: -len(infix)]
    return stem


def diffusers_class(name: str) -> type | None:
    import diffusers

    try:
        cls = getattr(diffusers, name)
    except (AttributeError, ImportError, RuntimeError):  # no such class, or one whose extras are missing
        return None
    return cls if isinstance(cls, type) and hasattr(cls, "from_pipe") else None


def named_classes(pipe: Any, task: str) -> list[type]:
    """The family's classes for `task` by diffusers' naming, other than the pipeline's own."""
    own = pipeline_class(pipe)
    stem = family_stem(own.__name__)
    if stem is None or task not in TASK_INFIXES:
        return []
    found = []
    for infix in TASK_INFIXES[task]:
        cls = diffusers_class(f"{stem}{infix}Pipeline")
        if cls is not None and cls is not own and cls not in found and pipeline_task(cls) == task:
            found.append(cls)
    return found


def registry_classes(pipe: Any, task: str) -> list[type]:
    """AutoPipeline's table entry for the pipeline's family and `task` (importing it takes about half a
    second, so it is only asked when the naming finds nothing that fits)."""
    from diffusers.pipelines import auto_pipeline

    table = getattr(auto_pipeline, _REGISTRY.get(task, ""), None)
    if not table:
        return []
    own = pipeline_class(pipe).__name__
    families = [key for mapping in getattr(auto_pipeline, "SUPPORTED_TASKS_MAPPINGS", [])
                for key, cls in mapping.items() if getattr(cls, "__name__", None) == own]
    found = []
    for key in families:
        cls = table.get(key)
        if isinstance(cls, type) and cls.__name__ != own and cls not in found and pipeline_task(cls) == task:
            found.append(cls)
    return found


def _declared_types(cls: type) -> dict[str, tuple[type, ...]]:
    try:
        types = cls._get_signature_types()
    except (AttributeError, TypeError, NameError):  # older diffusers, or annotations it cannot resolve
        return {}
    skip = (inspect.Parameter.empty, type(None))
    return {name: tuple(t for t in found if isinstance(t, type) and t not in skip)
            for name, found in types.items() if isinstance(found, tuple)}


def unfit_components(pipe: Any, cls: type) -> str | None:
    """Why the loaded pipeline's components cannot make a `cls`, or None when they can."""
    import torch

    params = inspect.signature(cls.__init__).parameters
    optional = set(getattr(cls, "_optional_components", None) or [])
    components = getattr(pipe, "components", {}) or {}
    types = _declared_types(cls)
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        component = components.get(name)
        if component is None:
            if param.default is param.empty and name not in optional:
                return f"it needs a {name}, which the model does not have"
            continue
        wanted = types.get(name)
        if isinstance(component, torch.nn.Module) and wanted and not isinstance(component, wanted):
            kinds = " or ".join(t.__name__ for t in wanted)
            return f"its {name} must be a {kinds}, not the model's {type(component).__name__}"
    return None


_TEMPORAL_SCALES = ("vae_scale_factor_temporal", "vae_temporal_compression_ratio")


class _Reached(Exception):
    """Raised from the denoiser's forward hook: the dry run got through it."""


def _probe_arguments(pipe: Any, size: int) -> dict[str, Any]:
    import torch
    from PIL import Image

    names, _ = call_parameters(pipe)
    kwargs: dict[str, Any] = {}
    for role, argument in image_arguments(pipe).items():
        kwargs[argument] = Image.new("L" if role == "mask_image" else "RGB", (size, size), 128)
    settings = {"prompt": "", "height": size, "width": size, "num_inference_steps": 1, "strength": 1.0,
                "output_type": "latent", "generator": torch.Generator("cpu").manual_seed(0)}
    temporal = [t for t in (getattr(pipe, n, None) for n in _TEMPORAL_SCALES) if isinstance(t, int) and t > 0]
    if temporal:  # a few latent frames, in the 1 + k × ratio shape video VAEs take
        settings["num_frames"] = 2 * temporal[0] + 1
    kwargs.update({name: value for name, value in settings.items() if name in names})
    return kwargs


def is_compiled(module: Any) -> bool:
    """`module` was compiled in place (`Module.compile`, as --compile does) or is torch.compile's wrapper."""
    return getattr(module, "_compiled_call_impl", None) is not None or hasattr(module, "_orig_mod")


def dry_run(pipe: Any) -> str | None:
    """Run `pipe` for one step on a small input, stopping right after its denoiser's first call: why the
    model's weights do not fit this class (a tensor shape error on the way), or None. A failure of
    another kind (a size or frame count this family refuses, say) says nothing about fit: let pass."""
    import torch

    from diffrun.pipelines.runtime import first_line, is_out_of_memory
    from diffrun.pipelines.sizes import size_multiple

    name = next((n for n in ("transformer", "unet") if isinstance(getattr(pipe, n, None), torch.nn.Module)), None)
    if name is None or is_compiled(getattr(pipe, name)):  # none, or --compile: a probe would only cost a recompile
        return None
    if hasattr(getattr(pipe, name), "_hf_hook"):  # --offload: the probe would stream every module to the GPU
        return None
    denoiser = getattr(pipe, name)
    entered: list[bool] = []  # whether a failure came from inside the denoiser

    def before(_module: Any, _args: Any) -> None:
        entered.append(True)

    def after(_module: Any, _args: Any, _output: Any) -> None:
        raise _Reached

    hooks = [denoiser.register_forward_pre_hook(before), denoiser.register_forward_hook(after)]
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            pipe(**_probe_arguments(pipe, size_multiple(pipe) * 8))
    except _Reached:
        return None
    except RuntimeError as exc:  # torch's shape errors: the weights do not fit what this class feeds them
        if is_out_of_memory(exc):
            return None
        where = f"the model's {name} does" if entered else "the model's weights do"
        return f"{where} not fit it ({first_line(exc, 160)})"
    except Exception:  # diffusers' argument checks (ValueError, TypeError): about the dry run, not the model
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return None


def switch(pipe: Any, task: str, dtype: str) -> tuple[Any | None, list[str]]:
    """The pipeline for `task` made from `pipe` with from_pipe, or None and why each candidate was refused.

    DiffusionPipeline.from_pipe casts the shared modules to its `dtype` argument (fp32 when left out):
    passing the loaded dtype keeps an fp16 model, original pipeline included, from turning into fp32.
    """
    from diffrun.pipelines.loading import dtype_kwarg
    from diffrun.pipelines.runtime import first_line, torch_dtype

    kwargs = {dtype_kwarg(): torch_dtype(dtype)}
    reasons: list[str] = []
    tried: set[type] = set()
    for source in (named_classes, registry_classes):  # the registry is only imported when naming fails
        for cls in source(pipe, task):
            if cls in tried:
                continue
            tried.add(cls)
            reason = unfit_components(pipe, cls)
            switched = None
            if reason is None:
                try:
                    switched = cls.from_pipe(pipe, **kwargs)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:  # diffusers' "cannot make it"
                    reason = first_line(exc, 160)
            if switched is not None:
                if hasattr(switched, "set_progress_bar_config"):
                    switched.set_progress_bar_config(disable=True)
                reason = dry_run(switched)
            if reason is None and switched is not None:
                return switched, []
            reasons.append(f"{cls.__name__}: {reason}")
    return None, reasons


def sibling_class(pipe: Any, task: str) -> type | None:
    """The first class diffusers' naming offers the pipeline's family for `task`."""
    found = named_classes(pipe, task)
    return found[0] if found else None

