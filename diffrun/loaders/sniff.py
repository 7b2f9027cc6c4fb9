"""What the bytes are: an allowed image format (from magic bytes), or the reason they are refused.

The allow-list alone decides what decodes; magic bytes pick the one allowed decoder to try. Anything
else is named as precisely as possible, so the error says what the input really is:

1. ISO media (`ftyp`): AVIF, HEIF/HEIC, video.
2. Archives and executables (gzip, zip, tar, ...).
3. Image formats Pillow can identify but that are not allowed (TGA, PPM, PCX, ICO, PSD, ...): each
   of Pillow's own plugins checks its signature and parses the header, without decoding pixels.
4. A short table of formats Pillow cannot identify (PDF, OpenEXR, HDR, ...), and signatures of
   allowed-list outsiders whose header is too damaged for Pillow to parse.
5. HTML, XML, SVG, JSON, text; else "unrecognised data" with the first bytes.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib

from PIL import Image

from diffrun.errors import InputError

# Exceptions Pillow's plugins raise on malformed input (Pillow's own fuzzers expect this set).
# IndexError/KeyError/TypeError/ZeroDivisionError/OverflowError come from header parsers that
# index tables or compute sizes from untrusted fields; they carry no meaning beyond "corrupt".
PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, IndexError, KeyError,
    TypeError, ZeroDivisionError, OverflowError, MemoryError, Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

# warnings.catch_warnings() swaps process-wide state; every use of it in the loaders holds this lock,
# so that concurrent loads cannot leave a warnings filter changed for good.
WARNINGS_LOCK = threading.Lock()


def _avif_available() -> bool:
    from PIL import features

    try:
        return bool(features.check("avif"))
    except (ValueError, ImportError):  # older Pillow: no such feature name
        return False


ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF") + (
    ("AVIF",) if _avif_available() else ())

ALLOWED_HINT = "supported formats: " + ", ".join(
    "WebP" if f == "WEBP" else f for f in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
    if f in ALLOWED_FORMATS)

# Pillow's format ids, as people write them.
_SHOWN = {"JPEG2000": "JPEG 2000", "SUN": "Sun raster", "MPEG": "MPEG video"}

# Signatures of formats outside the allow-list, for when Pillow has no plugin or cannot parse the
# header. No CUR here: "00 00 02 00" is also how every uncompressed true-colour TGA starts.
_REFUSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"8BPS", "PSD"), (b"SIMPLE  =", "FITS"),
    (b"\x00\x00\x01\x00", "ICO"), (b"icns", "ICNS"), (b"%PDF", "PDF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"), (b"qoif", "QOI"),
    (b"DDS ", "DDS"), (b"\x76\x2f\x31\x01", "OpenEXR"), (b"#?RADIANCE", "HDR"), (b"#?RGBE", "HDR"),
    (b"FORM", "IFF"), (b"gimp xcf", "XCF"), (b"\x59\xa6\x6a\x95", "Sun raster"), (b"\x01\xda", "SGI"),
    (b"BLP1", "BLP"), (b"BLP2", "BLP"), (b"/* XPM */", "XPM"),
)
_ARCHIVES: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip data"), (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "a zip archive"),
    (b"\xfd7zXZ\x00", "xz data"), (b"BZh", "bzip2 data"), (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", "zstd data"), (b"Rar!\x1a\x07", "a RAR archive"), (b"\x7fELF", "an executable"),
    (b"!<arch>\n", "an ar archive"),
)


def sniff_format(data: bytes, display: str = "input") -> str:
    """The allowed Pillow format for `data`, or InputError saying what the bytes are instead."""
    if not data:
        raise InputError(display, "empty input (0 bytes)", code="empty")
    head = data[:64]
    found = _allowed(head)
    if found:
        return found
    if head[4:8] == b"ftyp":
        _refuse_iso_media(data, display)
    archive = _archive(data)
    if archive:
        raise InputError(display, f"not an image (looks like {archive})", code="not_an_image")
    name = identify(data) or next((name for magic, name in _REFUSED_MAGIC if head.startswith(magic)), None)
    if name:
        raise unsupported(display, name)
    reason, code = _describe_non_image(data[:1024])
    raise InputError(display, reason, hint=ALLOWED_HINT, code=code)


def unsupported(display: str, name: str) -> InputError:
    return InputError(display, f"unsupported image format: {name}", hint=ALLOWED_HINT, code="unsupported_format")


def _allowed(head: bytes) -> str | None:
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
    if head[4:8] == b"ftyp" and "AVIF" in ALLOWED_FORMATS and _ftyp_brands(head) & {b"avif", b"avis"}:
        return "AVIF"
    return None


def _refuse_iso_media(data: bytes, display: str) -> None:
    brands = _ftyp_brands(data)
    if brands & {b"avif", b"avis"}:
        raise InputError(display, "unsupported image format: AVIF (this Pillow has no AVIF support)",
                         hint=ALLOWED_HINT, code="unsupported_format")
    if brands & {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}:
        raise unsupported(display, "HEIF/HEIC")
    major = data[8:12].decode("latin-1").strip()
    if major.startswith(("iso", "mp4", "qt", "M4", "avc", "3g")):
        raise InputError(display, f"not an image (looks like a video, brand {major!r})", code="not_an_image")
    raise unsupported(display, f"ISO media file (brand {major!r})")


def _ftyp_brands(data: bytes) -> set[bytes]:
    size = int.from_bytes(data[:4], "big")
    end = min(max(size, 16), len(data), 256)
    return {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}


def _archive(data: bytes) -> str | None:
    if data[257:262] == b"ustar":  # POSIX and GNU tar both carry it in the first header block
        return "a tar archive"
    return next((name for magic, name in _ARCHIVES if data.startswith(magic)), None)


def identify(data: bytes) -> str | None:
    """The name of the non-allowed format whose Pillow plugin parses this header, if any.

    Pillow's `Image.open` would do the same walk, but decide nothing about our allow-list and stop
    at its own decompression-bomb check; here each plugin's signature check and header parser are
    called directly, and a plugin that parsed far enough to refuse the size has still named it.
    """
    Image.init()
    prefix = data[:16]
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # header parsers warn about odd fields; the name is all we want
        for fmt in list(Image.ID):
            if fmt in ALLOWED_FORMATS or fmt not in Image.OPEN:
                continue
            factory, accept = Image.OPEN[fmt]
            try:
                if accept is not None:
                    verdict = accept(prefix)
                    if not verdict or isinstance(verdict, str):
                        continue
                found = factory(io.BytesIO(data), "")
            except Image.DecompressionBombError:
                return _SHOWN.get(fmt, fmt)
            except PIL_ERRORS:
                continue
            found.close()
            return _SHOWN.get(fmt, fmt)
    return None


def _describe_non_image(head: bytes) -> tuple[str, str]:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or b"<html" in text:
        return ("not an image (looks like HTML; is the URL a web page rather than the image itself?)",
                "not_an_image")
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        if b"<svg" in text:
            return "unsupported image format: SVG", "unsupported_format"
        return "not an image (looks like XML)", "not_an_image"
    if text[:1] in (b"{", b"["):
        return "not an image (looks like JSON)", "not_an_image"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as e:
        decoded = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else ""
    if decoded and all(c.isprintable() or c in "\t\r\n" for c in decoded):
        return "not an image (looks like text)", "not_an_image"
    return "not an image (unrecognised binary data)", "not_an_image"
