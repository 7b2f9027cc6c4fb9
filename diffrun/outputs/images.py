"""Writing one generated image to a file or stdout, with its recipe embedded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

from diffrun.errors import UsageError
from diffrun.outputs.atomic import atomic_write, write_stdout
from diffrun.outputs.formats import IMAGE_FORMATS, check_extension
from diffrun.outputs.metadata import exif_bytes, png_info, xmp_packet

DEFAULT_QUALITY = {"JPEG": 90, "WEBP": 90}
MAX_SEGMENT = 65_000


def check_quality(quality: int | None) -> None:
    """Raise UsageError unless `quality` is None or 1..100."""
    if quality is not None and not 1 <= int(quality) <= 100:
        raise UsageError(f"quality must be between 1 and 100, not {quality}")


def as_pil(image: Any):
    """A PIL image from a PIL image or an HxW(xC) numpy array (uint8, or floats in 0..1)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    import numpy as np

    array = np.asarray(image)
    if array.dtype.kind == "f":
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def _for_format(image, fmt: str):
    """Convert modes the format cannot store: JPEG gets RGB or L, WebP gets RGB or RGBA."""
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        return image.convert("RGB")
    if fmt == "WEBP" and image.mode not in ("RGB", "RGBA"):
        return image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    if fmt == "PNG" and image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        return image.convert("RGB")
    return image


def embeddable_metadata(recipe: dict) -> dict[str, bytes]:
    """`exif` and `xmp` save arguments for JPEG/WebP, leaving out any over the 64 KiB segment limit."""
    metadata = {"exif": exif_bytes(recipe), "xmp": xmp_packet(recipe)}
    return {k: v for k, v in metadata.items() if len(v) <= MAX_SEGMENT}


def encode_image(image: Any, fmt: str, recipe: dict, out: BinaryIO, *, quality: int | None = None) -> None:
    """Encode `image` as `fmt` ("PNG", "JPEG" or "WEBP") into `out`, the recipe embedded."""
    image = _for_format(as_pil(image), fmt)
    if fmt == "PNG":
        image.save(out, "PNG", pnginfo=png_info(recipe))
        return
    q = DEFAULT_QUALITY[fmt] if quality is None else int(quality)
    # JPEG and WebP metadata segments hold at most 64 KiB: a recipe larger than that (a novel of a
    # prompt) is left out of the file rather than failing the write; PNG and --sidecar keep any size.
    image.save(out, fmt, quality=q, **embeddable_metadata(recipe))


def write_image(
    image: Any,
    target: str | Path,
    recipe: dict,
    *,
    quality: int | None = None,
    overwrite: bool = False,
    stdout: BinaryIO | None = None,
) -> str:
    """Write `image` to `target` atomically (never replacing a file unless `overwrite`), or PNG to stdout.

    Returns the path written, or "-" for stdout.
    """
    check_quality(quality)
    if str(target) == "-":
        buf = io.BytesIO()
        encode_image(image, "PNG", recipe, buf)
        return write_stdout(buf.getvalue(), stdout)
    fmt = IMAGE_FORMATS[check_extension(str(target), "image")]
    return atomic_write(target, lambda f: encode_image(image, fmt, recipe, f, quality=quality), overwrite=overwrite)
