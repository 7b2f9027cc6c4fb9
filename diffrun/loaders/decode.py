"""Bytes -> a fully loaded PIL image, in memory only, with a format allow-list and a pixel cap.

Decoding never touches the disk (BytesIO only) and never sets ImageFile.LOAD_TRUNCATED_IMAGES.
The format is sniffed from magic bytes (sniff.py), never taken from a file name or a declared media
type. diffrun's pixel cap (`--max-pixels`) is the only one: the header is parsed by the format's
Pillow plugin directly (not `Image.open`, whose own decompression-bomb check would refuse first),
the cap is applied to the size it declares, and Pillow's process-wide limit is lifted only while
an image the user allowed past it decodes (`_pillow_limit_lifted`).

One decode holds, in order: a share of the decoded-bytes budget (budget.py), for TIFF the fd-2
capture that keeps libtiff's messages with this input (cstderr.py), then the pixels.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, ImageOps

from diffrun.errors import InputError, OutOfMemoryError
from diffrun.loaders import cstderr, problems
from diffrun.loaders.budget import BUDGET, estimate
from diffrun.loaders.convert import OUTPUT_MODES, normalise, normalised
from diffrun.loaders.policy import BYTES_HINT, FetchPolicy
from diffrun.loaders.sniff import ALLOWED_FORMATS, PIL_ERRORS, WARNINGS_LOCK, sniff_format

__all__ = ["ALLOWED_FORMATS", "OUTPUT_MODES", "PIL_ERRORS", "DecodedImage", "decode_image", "normalise",
           "sniff_format"]


@dataclass
class DecodedImage:
    image: Image.Image
    format: str
    """The sniffed format: "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF" or "AVIF"."""
    original_mode: str
    width: int
    height: int
    notes: tuple[str, ...] = ()
    """What libtiff wrote while this image decoded without error (warnings): for --debug only."""


def decode_image(data: bytes, policy: FetchPolicy | None = None, *, mode: str = "RGB",
                 display: str = "input") -> DecodedImage:
    """Decode image bytes to a detached, fully loaded image in `mode` ("RGB", "L" or "RGBA")."""
    policy = policy or FetchPolicy()
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode must be one of {OUTPUT_MODES}, not {mode!r}")
    if len(data) > policy.max_bytes:
        raise InputError(display, f"too large: {len(data)} bytes > {policy.max_bytes} bytes",
                         hint=BYTES_HINT, code="too_large")
    fmt = sniff_format(data, display)
    if fmt == "PNG":
        problems.check_png_chunks(data, display)
    im = _open(data, fmt, policy, display)
    width, height = im.size
    original_mode = im.mode
    try:
        with BUDGET.reserve(estimate(width, height, original_mode, mode), policy.decode_budget), \
                _pillow_limit_lifted(_past_pillow_limit(width * height)):
            _decode_into_one_block(im, mode)
            notes = _load(im, fmt, display)
            image = _finish(im, policy, mode, display)
    finally:
        im.close()
    return DecodedImage(image=image, format=fmt, original_mode=original_mode, width=image.width,
                        height=image.height, notes=notes)


def _open(data: bytes, fmt: str, policy: FetchPolicy, display: str) -> ImageFile.ImageFile:
    """Parse the header only (no pixels) and apply the pixel cap to the size it declares."""
    try:
        try:
            im = _parse_header(data, fmt)
        except Image.DecompressionBombError:
            # A plugin's own check fired inside the header (WebP, GIF frames, MPO): parse it again with
            # Pillow's limit off, only to read the size that diffrun's cap is then applied to.
            with _pillow_limit_lifted(True):
                im = _parse_header(data, fmt)
    except PIL_ERRORS as e:
        raise problems.header_error(e, fmt, display) from None
    width, height = im.size
    if width * height > policy.max_pixels:
        im.close()
        raise problems.too_many_pixels(display, width * height, policy.max_pixels, (width, height))
    if width <= 0 or height <= 0:
        im.close()
        raise problems.truncated(display, f"{fmt} header: image size {width}x{height}")
    return im


def _parse_header(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """The format's Pillow plugin on the bytes: what Image.open does for one format, minus its bomb check."""
    if fmt not in Image.OPEN:
        Image.init()
    factory, _accept = Image.OPEN[fmt]
    with WARNINGS_LOCK, warnings.catch_warnings():
        # diffrun's cap decides; Pillow's warning about its own limit would only be noise on stderr
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return factory(io.BytesIO(data), "")


def _load(im: ImageFile.ImageFile, fmt: str, display: str) -> tuple[str, ...]:
    """Decode the pixels; for TIFF, with libtiff's output caught and folded into the error, if any."""
    failure: BaseException | None = None
    with cstderr.capture(fmt == "TIFF") as caught:
        try:
            im.load()
        except PIL_ERRORS as e:
            failure = e
    if isinstance(failure, MemoryError):  # the pixels were within --max-pixels: the machine is short, not the input
        raise OutOfMemoryError(f"{display}: out of memory decoding its {im.size[0]}x{im.size[1]} {fmt} pixels",
                               hint="free memory, or lower --max-pixels to refuse such inputs up front") from None
    if failure is not None:
        compression = _tiff_compression(im) if fmt == "TIFF" else None
        raise problems.load_error(failure, fmt, compression, caught.lines, display) from None
    if problems.damaged_pixels(caught.lines):
        raise problems.truncated(display, problems.libtiff_summary(caught.lines))
    return tuple(caught.lines)


def _decode_into_one_block(im: ImageFile.ImageFile, mode: str) -> None:
    """For an RGBA image that will be composited into RGB: decode into one contiguous block.

    Pillow allocates big images in 16 MB blocks; one block lets convert.composite take the blended
    RGBA pixels as RGB without a copy (Image.fromarrow), so the decoded image is also the output.
    The plugin's load uses an image that is already set. Anything unexpected: Pillow's own allocation.
    """
    if im.mode != "RGBA" or mode == "RGBA" or getattr(im, "_tile_size", im.size) != im.size:
        return
    new_block = getattr(Image.core, "new_block", None)
    if new_block is None:
        return
    with contextlib.suppress(AttributeError, TypeError, ValueError, MemoryError):
        im.im = new_block(im.mode, im.size)


def _finish(im: ImageFile.ImageFile, policy: FetchPolicy, mode: str, display: str) -> Image.Image:
    """Upright, detached from the file, in `mode`: the decoded pixels reused when nothing changes."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        # exif_transpose copies even when there is nothing to turn; a detached view costs nothing.
        plain = _detached(im) if orientation in (1, None) else ImageOps.exif_transpose(im)
        im.close()  # from here `plain` alone holds the decoded pixels, so each step can free them
        return normalised(plain, policy, mode, owned=True)
    except PIL_ERRORS as e:
        raise InputError(display, f"cannot convert the image ({problems.describe(e)})",
                         code="convert_failed") from None


def _detached(im: ImageFile.ImageFile) -> Image.Image:
    """A plain Image on the same decoded pixels (no copy), with no file behind it."""
    new = getattr(im, "_new", None)
    return new(im.im) if new is not None else im.copy()


def _tiff_compression(im: ImageFile.ImageFile) -> int | None:
    try:
        value = im.tag_v2.get(259, 1)  # type: ignore[attr-defined]
    except (AttributeError, KeyError, ValueError):  # not parsed that far
        return None
    return value if isinstance(value, int) else None


# -- Pillow's own limit --------------------------------------------------------------------------------

_LIMIT_LOCK = threading.Lock()
_lifted = 0
_saved_limit: int | None = None


def pillow_limit() -> int | None:
    """Pillow's MAX_IMAGE_PIXELS as the user's code set it (not the None of a lift in progress)."""
    with _LIMIT_LOCK:
        return _saved_limit if _lifted else Image.MAX_IMAGE_PIXELS


def _past_pillow_limit(pixels: int) -> bool:
    limit = pillow_limit()
    return limit is not None and pixels > limit


@contextlib.contextmanager
def _pillow_limit_lifted(active: bool) -> Iterator[None]:
    """Turn Pillow's checks off while an image past its limit (but within ours) decodes.

    Pillow's plugins check MAX_IMAGE_PIXELS again while loading (TIFF tiles, GIF frames), so a user's
    `--max-pixels` above it needs it off. The switch is counted: the first decode that needs it saves
    and clears the limit, the last one puts it back, so concurrent decodes never restore a wrong
    value. Other diffrun loads meanwhile are still capped by their own policy from the header.
    """
    global _lifted, _saved_limit
    if not active:
        yield
        return
    with _LIMIT_LOCK:
        if _lifted == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lifted += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _lifted -= 1
            if _lifted == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit
