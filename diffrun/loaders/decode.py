"""Bytes -> a fully loaded PIL image, in memory only, with a format allow-list and a pixel cap.

Decoding never touches the disk (BytesIO only) and never sets ImageFile.LOAD_TRUNCATED_IMAGES.
The format is sniffed from magic bytes, never taken from a file name or a declared media type.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from diffrun.errors import InputError
from diffrun.loaders.policy import FetchPolicy

OUTPUT_MODES = ("RGB", "L", "RGBA")

# Exceptions Pillow's plugins raise on malformed input (Pillow's own fuzzers expect this set).
# IndexError/KeyError/TypeError/ZeroDivisionError/OverflowError come from header parsers that
# index tables or compute sizes from untrusted fields; they carry no meaning beyond "corrupt".
PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError,
    TypeError, ZeroDivisionError, OverflowError, MemoryError, Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

# warnings.catch_warnings() swaps process-wide state; serialise the (short) header parse that uses it
# so that concurrent loads cannot leave the DecompressionBombWarning filter changed for good.
_OPEN_LOCK = threading.Lock()
_PIXELS_HINT = "raise --max-pixels if the image is trusted"


@dataclass
class DecodedImage:
    image: Image.Image
    format: str
    """The sniffed format: "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF" or "AVIF"."""
    original_mode: str
    width: int
    height: int


def decode_image(data: bytes, policy: FetchPolicy | None = None, *, mode: str = "RGB",
                 display: str = "input") -> DecodedImage:
    """Decode image bytes to a detached, fully loaded image in `mode` ("RGB", "L" or "RGBA")."""
    policy = policy or FetchPolicy()
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode must be one of {OUTPUT_MODES}, not {mode!r}")
    if len(data) > policy.max_bytes:
        raise InputError(display, f"too large: {len(data)} bytes > {policy.max_bytes} bytes",
                         hint="raise --max-bytes")
    fmt = sniff_format(data, display)
    try:
        im = _open(data, fmt, policy, display)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(display, _bomb_reason(e, policy), hint=_PIXELS_HINT) from None
    except UnidentifiedImageError:
        raise InputError(display, f"truncated or corrupt image data (not a readable {fmt} header)") from None
    except PIL_ERRORS as e:
        raise InputError(display, f"truncated or corrupt image data ({fmt} header: {_describe(e)})") from None
    try:
        with im:
            original_mode = im.mode
            try:
                im.load()
            except Image.DecompressionBombError as e:
                raise InputError(display, _bomb_reason(e, policy), hint=_PIXELS_HINT) from None
            except PIL_ERRORS as e:
                raise InputError(display, f"truncated or corrupt image data ({_describe(e)})") from None
            out = _oriented(im)
            # A new image from transposing is ours to reuse; the opened file is copied once, at most.
            out = _normalised(out, policy, mode, owned=out is not im)
    except InputError:
        raise
    except PIL_ERRORS as e:
        raise InputError(display, f"cannot convert the image ({_describe(e)})") from None
    return DecodedImage(image=out, format=fmt, original_mode=original_mode,
                        width=out.width, height=out.height)


def _open(data: bytes, fmt: str, policy: FetchPolicy, display: str) -> ImageFile.ImageFile:
    """Parse the header only (Image.open is lazy) and apply the pixel cap before any decoding."""
    strict = Image.MAX_IMAGE_PIXELS is not None and policy.max_pixels <= Image.MAX_IMAGE_PIXELS
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error" if strict else "ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data), formats=[fmt])
    width, height = im.size
    if width * height > policy.max_pixels:
        im.close()
        raise InputError(display, f"too many pixels: {width}x{height} > {policy.max_pixels}", hint=_PIXELS_HINT)
    if width <= 0 or height <= 0:
        im.close()
        raise InputError(display, f"corrupt {fmt} data: image size {width}x{height}")
    return im


def normalise(im: Image.Image, policy: FetchPolicy, *, mode: str = "RGB") -> Image.Image:
    """A new, detached image in `mode`: deep images scaled to 8 bits, transparency composited."""
    return _normalised(im, policy, mode, owned=False)


def _normalised(im: Image.Image, policy: FetchPolicy, mode: str, *, owned: bool) -> Image.Image:
    """normalise(); `owned`: `im` is a plain image nobody else holds, returned as is when already in `mode`.

    Every step that changes the image makes a new one, so the copy that detaches the result from
    the caller's image is made only when no step ran (Pillow's convert() to the same mode copies too).
    """
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im, owned = _to_8bit(im), True
    if mode == "RGBA":
        out = im if owned and im.mode == "RGBA" else im.convert("RGBA")
    else:
        if _has_alpha(im):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*policy.background, 255))
            im, owned = Image.alpha_composite(background, rgba).convert("RGB"), True
        elif im.mode not in ("RGB", "L"):
            im, owned = im.convert("RGB"), True  # CMYK (Adobe inversion done by Pillow), P, 1, YCbCr, LAB...
        out = im if owned and im.mode == mode else im.convert(mode)
    out.load()
    return out


def _oriented(im: Image.Image) -> Image.Image:
    """`im` turned upright by its EXIF orientation: a new image, or `im` itself when it has none but 1.

    ImageOps.exif_transpose copies the whole image even when there is nothing to turn; looking at
    the tag first (Pillow parses and caches the EXIF block once) skips that copy for most inputs.
    """
    if im.getexif().get(ExifTags.Base.Orientation, 1) in (1, None):
        return im
    return ImageOps.exif_transpose(im)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float single-channel image to "L" by its real range."""
    import numpy as np

    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0
    elif im.mode == "I":
        top = int(arr.max()) if arr.size else 0
        depth = next((bits for bits in (8, 16, 32) if top < 2**bits), 32)
        scaled = np.clip(arr.astype(np.float64), 0, None) * (255.0 / (2**depth - 1))
    else:  # "F": [0, 1] scaled by 255, any other range stretched from its min..max
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if low >= 0.0 and high <= 1.0:
            scaled = arr * 255.0
        else:
            scaled = (arr - low) * (255.0 / (high - low)) if high > low else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _bomb_reason(e: BaseException, policy: FetchPolicy) -> str:
    """Pillow's decompression-bomb message, in the same words as diffrun's own pixel cap."""
    match = re.search(r"\((\d+) pixels\)", str(e))
    pixels = match.group(1) if match else "?"
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels: {pixels} > {2 * (Image.MAX_IMAGE_PIXELS or 0)} (Pillow's decompression-bomb limit)"
    return f"too many pixels: {pixels} > {policy.max_pixels}"


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# -- sniffing ---------------------------------------------------------------------------------------

def _avif_available() -> bool:
    from PIL import features

    try:
        return bool(features.check("avif"))
    except (ValueError, ImportError):  # older Pillow: no such feature name
        return False


ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF") + (
    ("AVIF",) if _avif_available() else ())

_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"8BPS", "PSD"), (b"SIMPLE  =", "FITS"),
    (b"\x00\x00\x01\x00", "ICO"), (b"\x00\x00\x02\x00", "CUR"), (b"icns", "ICNS"), (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"qoif", "QOI"),
    (b"DDS ", "DDS"), (b"\x76\x2f\x31\x01", "OpenEXR"), (b"#?RADIANCE", "HDR"), (b"FORM", "IFF"),
    (b"gimp xcf", "XCF"), (b"\x59\xa6\x6a\x95", "Sun raster"), (b"\x01\xda", "SGI"),
)
_ARCHIVES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "a zip archive"), (b"\xfd7zXZ\x00", "xz data"),
    (b"BZh", "bzip2 data"), (b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (b"\x7fELF", "an executable"),
)


def sniff_format(data: bytes, display: str = "input") -> str:
    """The Pillow format name for `data`, or InputError saying what the bytes look like instead."""
    if not data:
        raise InputError(display, "empty input (0 bytes)")
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(data)
        if brands & {b"avif", b"avis"}:
            if "AVIF" in ALLOWED_FORMATS:
                return "AVIF"
            raise InputError(display, "unsupported image format: AVIF (this Pillow has no AVIF support)")
        if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
            raise InputError(display, "unsupported image format: HEIF/HEIC", hint=_ALLOWED_HINT)
        major = data[8:12].decode("latin-1").strip()
        if major.startswith(("iso", "mp4", "qt", "M4", "avc", "3g")):
            raise InputError(display, f"not an image (looks like a video, brand {major!r})")
        raise InputError(display, f"unsupported image format: ISO media file (brand {major!r})")
    for magic, name in _REFUSED_MAGIC:
        if head.startswith(magic):
            raise InputError(display, f"unsupported image format: {name}", hint=_ALLOWED_HINT)
    for magic, name in _ARCHIVES:
        if head.startswith(magic):
            raise InputError(display, f"not an image (looks like {name})")
    raise InputError(display, _describe_non_image(data[:1024]), hint=_ALLOWED_HINT)


_ALLOWED_HINT = "supported formats: " + ", ".join(
    "WebP" if f == "WEBP" else f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
    if f in ALLOWED_FORMATS)


def _ftyp_brands(data: bytes) -> set[bytes]:
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), len(data), 256)
    return {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}


def _describe_non_image(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or b"<html" in text:
        return "not an image (looks like HTML; is the URL a web page rather than the image itself?)"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        if b"<svg" in text:
            return "unsupported image format: SVG"
        return "not an image (looks like XML)"
    if text[:1] in (b"{", b"["):
        return "not an image (looks like JSON)"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as e:
        decoded = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else ""
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "not an image (looks like text)"
    return "not an image (unrecognised binary data)"  # never its bytes: the file may hold secrets
