"""Output sizes: the pipeline's own default and multiple, and the size an image-conditioned job takes
from its input when --width/--height are left out."""

from __future__ import annotations

import math
from typing import Any

from diffrun.pipelines.calls import CONTROL, call_defaults, call_parameters

SIZE_ARGS = ("width", "height")

FALLBACK_AREA = 1024 * 1024
"""Most pixels an input-sized job gets from a pipeline whose default size cannot be read."""

_SPATIAL_SCALES = ("vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_scale_factor")


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _spatial_scale(pipe: Any) -> int:
    """Pixels per latent pixel, as the pipeline itself names it (8 for most VAEs)."""
    for name in _SPATIAL_SCALES:
        scale = _positive_int(getattr(pipe, name, None))
        if scale:
            return scale
    return 8


def _denoiser_config(pipe: Any) -> Any:
    for name in ("transformer", "unet"):
        module = getattr(pipe, name, None)
        if module is not None and getattr(module, "config", None) is not None:
            return module.config
    return None


def size_multiple(pipe: Any) -> int:
    """The multiple a width or height must be: latent scale times the denoiser's patch size, at least 8."""
    config = _denoiser_config(pipe)
    patch = getattr(config, "patch_size", None) if config is not None else None
    if isinstance(patch, (list, tuple)) and patch:
        patch = patch[-1]
    return max(8, _spatial_scale(pipe) * (_positive_int(patch) or 1))


def default_size(pipe: Any) -> tuple[int, int] | None:
    """(width, height) the model is made for, where it can be read without running it: its denoiser's
    sample size (SD, SDXL, SD3, SVD, CogVideoX), else the class's own __call__ defaults (LTX, Wan)."""
    scale = _spatial_scale(pipe)
    sample = _positive_int(getattr(pipe, "default_sample_size", None))  # SDXL, SD3, Flux
    if sample:
        return sample * scale, sample * scale
    config = _denoiser_config(pipe)
    sample = getattr(config, "sample_size", None) if config is not None else None  # an int or (height, width)
    if isinstance(sample, (list, tuple)) and len(sample) == 2 and all(map(_positive_int, sample)):
        return sample[1] * scale, sample[0] * scale
    if _positive_int(sample):
        return sample * scale, sample * scale
    if config is not None:
        h, w = (_positive_int(getattr(config, n, None)) for n in ("sample_height", "sample_width"))
        if w and h:
            return w * scale, h * scale
    defaults = call_defaults(pipe)
    width, height = _positive_int(defaults.get("width")), _positive_int(defaults.get("height"))
    return (width, height) if width and height else None


def _floor(value: float, multiple: int) -> int:
    return max(multiple, int(value) // multiple * multiple)


def size_from_image(pipe: Any, image: Any, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """The size a job conditioned on `image` runs at: with neither width nor height, the image's aspect
    ratio scaled down (never up) to at most the pipeline's default area; with one, the other from the
    aspect ratio. Floored to the pipeline's multiple."""
    w, h = image.size
    multiple = size_multiple(pipe)
    if width:
        return int(width), _floor(int(width) * h / w, multiple)
    if height:
        return _floor(int(height) * w / h, multiple), int(height)
    default = default_size(pipe)
    area = default[0] * default[1] if default else FALLBACK_AREA
    scale = min(1.0, math.sqrt(area / (w * h)))
    return _floor(w * scale, multiple), _floor(h * scale, multiple)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def conditioning_image(images: dict[str, Any]) -> Any | None:
    """The input a job's size follows: its first `image`, else its first control image."""
    for name in ("image", CONTROL):
        image = _first(images.get(name))
        if getattr(image, "size", None) is not None:
            return image
    return None


def sized_args(pipe: Any, images: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """`args` with width and height filled in from the conditioning image, for pipelines that take a
    size and were given at most one of the two."""
    names, _ = call_parameters(pipe)
    image = conditioning_image(images)
    if image is None or not all(n in names for n in SIZE_ARGS) or all(args.get(n) for n in SIZE_ARGS):
        return args
    width, height = size_from_image(pipe, image, args.get("width"), args.get("height"))
    return {**args, "width": width, "height": height}


def resized_images(pipe: Any, images: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """`images`, with `image` cropped and resized to the requested width/height when the pipeline itself
    takes no size (image-to-image pipelines size their output from the input)."""
    names, _ = call_parameters(pipe)
    width, height = (args.get(n) if n not in names else None for n in SIZE_ARGS)
    image = images.get("image")
    if not (width or height) or image is None or isinstance(image, (list, tuple)):
        return images
    from PIL import ImageOps

    w, h = image.size
    width = int(width or round(w * int(height) / h))
    height = int(height or round(h * width / w))
    size = (max(8, width // 8 * 8), max(8, height // 8 * 8))
    return {**images, "image": ImageOps.fit(image, size)}
