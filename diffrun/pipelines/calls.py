"""What a pipeline class's __call__ takes: argument names, defaults, which argument holds which image,
and the one task that shape of __call__ is for. Pure introspection: works on classes and instances alike.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

CONTROL = "control_image"
"""The conventional name of a ControlNet's condition image (diffusers' image-to-image and inpainting
ControlNet classes call it this; their text-to-image classes call it `image`)."""

IMAGE_ROLES = ("image", "mask_image", CONTROL)
"""Conventional input names that decide a task or reach a renamed argument."""


def pipeline_class(pipe: Any) -> type:
    return pipe if isinstance(pipe, type) else type(pipe)


@lru_cache(maxsize=512)
def _signature(cls: type) -> tuple[frozenset[str], bool, dict[str, Any]]:
    params = inspect.signature(cls.__call__).parameters
    names = frozenset(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)) - {"self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    own = (getattr(cls.__call__, "__module__", "") or "").startswith("diffusers.")
    defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
    return names, var_kw and not own, defaults


def call_parameters(pipe: Any) -> tuple[set[str], bool]:
    """The names __call__ takes (of a pipeline or a pipeline class), and whether it passes any other
    keyword on (**kwargs).

    diffusers' own pipelines keep **kwargs only to pop deprecated arguments and drop the rest
    silently, so for them **kwargs does not count; custom (community) pipelines' does.
    """
    names, var_kw, _ = _signature(pipeline_class(pipe))
    return set(names), var_kw


def call_defaults(pipe: Any) -> dict[str, Any]:
    """__call__'s default values, by argument name."""
    return dict(_signature(pipeline_class(pipe))[2])


@lru_cache(maxsize=512)
def _components(cls: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}
    except (TypeError, ValueError):  # a builtin or C-level __init__: no named components
        return frozenset()


def is_controlled(pipe: Any) -> bool:
    """Whether the pipeline is built around a ControlNet (a `controlnet` component)."""
    return "controlnet" in _components(pipeline_class(pipe))


def image_arguments(pipe: Any) -> dict[str, str]:
    """Conventional input name (image, mask_image, control_image) -> the __call__ argument that takes it.

    Only ControlNet classes rename: their text-to-image classes take the control image as `image`
    and have no image to start from; the other classes take each image by its conventional name.
    """
    names, _ = call_parameters(pipe)
    if is_controlled(pipe) and CONTROL not in names and "image" in names and "mask_image" not in names:
        return {CONTROL: "image"}
    return {role: role for role in IMAGE_ROLES if role in names}


def is_video(pipe: Any) -> bool:
    return "num_frames" in call_parameters(pipe)[0]


def pipeline_task(pipe: Any) -> str:
    """The one task a pipeline's __call__ is shaped for."""
    names, _ = call_parameters(pipe)
    roles = image_arguments(pipe)
    medium = "video" if "num_frames" in names else "image"
    if "mask_image" in roles:
        return "inpainting"
    if "image" in roles:
        return f"image-to-{medium}"
    if "prompt" in names:
        return f"text-to-{medium}"
    return "custom"
