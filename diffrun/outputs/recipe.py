"""Sidecar recipe files, and reading a recipe back from anything diffrun wrote."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from diffrun.errors import UsageError
from diffrun.outputs.atomic import atomic_write
from diffrun.outputs.formats import mp4_available
from diffrun.outputs.metadata import (
    EXIF_IFD,
    RECIPE_KEY,
    USER_COMMENT,
    decode_user_comment,
    recipe_from_xmp,
    recipe_json,
)


def write_sidecar(target: str | Path, recipe: dict, *, overwrite: bool = False) -> str:
    """Write the recipe as pretty JSON to "<target>.json", atomically; return that path."""
    if str(target) == "-":
        raise UsageError("no sidecar file for stdout output")
    text = recipe_json(recipe, indent=2) + "\n"
    return atomic_write(f"{target}.json", lambda f: f.write(text.encode("utf-8")), overwrite=overwrite)


def _as_recipe(text: str | bytes | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested thousands deep
        return None
    return value if isinstance(value, dict) else None


def _image_texts(path: Path) -> Iterator[str | bytes]:
    """Every place a recipe may sit in an image file diffrun wrote, most specific first."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            text = getattr(im, "text", None)  # PNG: tEXt/iTXt/zTXt chunks, read to the end of the file
            if text and RECIPE_KEY in text:
                yield text[RECIPE_KEY]
            comment = im.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
            if comment:
                yield decode_user_comment(comment)
            xmp = im.info.get("xmp")
            if xmp:
                yield recipe_from_xmp(xmp) or ""
            if im.info.get("comment"):  # GIF
                yield im.info["comment"]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError):
        return


def _unescape_ffmetadata(value: str) -> str:
    out, chars = [], iter(value)
    for c in chars:
        out.append(next(chars, "") if c == "\\" else c)
    return "".join(out)


def _video_texts(path: Path) -> Iterator[str]:
    """The "comment" metadata of an MP4, read with imageio-ffmpeg's ffmpeg when it is installed."""
    if not mp4_available():
        return
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        done = subprocess.run(
            [exe, "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (ImportError, RuntimeError, OSError, subprocess.TimeoutExpired):
        return
    for line in done.stdout.decode("utf-8", errors="replace").splitlines():
        if line.startswith("comment="):
            yield _unescape_ffmetadata(line[len("comment=") :])


def read_recipe(path: str | Path) -> dict:
    """The recipe from a file diffrun wrote (embedded, or its "<path>.json" sidecar), or a .json recipe."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            texts: Iterator[str | bytes] = iter([path.read_bytes()])
        elif path.suffix.lower() == ".mp4":
            texts = _video_texts(path)
        else:
            texts = _image_texts(path)
        for text in texts:
            recipe = _as_recipe(text)
            if recipe is not None:
                return recipe
    sidecar = Path(f"{path}.json")
    if sidecar.is_file():
        recipe = _as_recipe(sidecar.read_bytes())
        if recipe is not None:
            return recipe
    if not path.exists() and not sidecar.exists():
        raise UsageError(f"--from {path}: no such file", hint="give an image, video or .json diffrun wrote")
    raise UsageError(f"no diffrun recipe in {path}", hint="--from takes an output diffrun wrote, or its .json sidecar")
