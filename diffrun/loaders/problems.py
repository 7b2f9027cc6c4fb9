"""Why an image did not decode, in words a person understands, with a stable `code`.

Three kinds, kept apart: the file is a valid one in a variant Pillow cannot decode ("unsupported BMP
variant: embedded PNG", "unsupported TIFF compression: WEBP": code `unsupported_variant`), the data
is cut short or damaged ("truncated or corrupt image data (...)": code `truncated`), or it is over a
limit (`too_many_pixels`). Pillow's messages are used for detail but never its internal names.
"""

from __future__ import annotations

import re

from PIL import Image

from diffrun.errors import InputError

CONVERT_HINT = "convert it to PNG or JPEG first"
_TEXT_HINT = "save it again without its text metadata"
TIFF_COMPRESSIONS = {
    1: "none", 2: "CCITT RLE", 3: "CCITT Group 3", 4: "CCITT Group 4", 5: "LZW", 6: "old-style JPEG",
    7: "JPEG", 8: "Deflate", 32771: "CCITT RLEW", 32773: "PackBits", 32809: "ThunderScan", 32946: "Deflate",
    33003: "JPEG 2000", 33005: "JPEG 2000", 34661: "JBIG", 34676: "SGILog", 34677: "SGILog24",
    34712: "JPEG 2000", 34887: "LERC", 34925: "LZMA", 34892: "lossy JPEG", 50000: "ZSTD", 50001: "WEBP",
    52546: "JPEG XL",
}
_BMP_COMPRESSIONS = {4: "embedded JPEG", 5: "embedded PNG", 6: "alpha bitfields", 11: "CMYK", 12: "CMYK RLE-8",
                     13: "CMYK RLE-4"}
_LIBTIFF_UNSUPPORTED = re.compile(r"compression support is not configured|not implemented|unknown compression",
                                  re.IGNORECASE)


def too_many_pixels(display: str, pixels: int, limit: int, size: tuple[int, int] | None = None) -> InputError:
    """The one shape of the pixel-cap message: `too many pixels: 14000×14000 = 196.0 MP > 89.5 MP (--max-pixels)`."""
    shown = f"{size[0]}×{size[1]} = {_mp(pixels)}" if size else _mp(pixels)
    return InputError(display, f"too many pixels: {shown} > {_mp(limit)} (--max-pixels)",
                      hint="raise --max-pixels if the image is trusted", code="too_many_pixels")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB"


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def bomb_pixels(e: BaseException) -> int | None:
    """The pixel count in Pillow's decompression-bomb message."""
    match = re.search(r"\((\d+) pixels\)", str(e))
    return int(match.group(1)) if match else None


def truncated(display: str, detail: str) -> InputError:
    return InputError(display, f"truncated or corrupt image data ({detail})", code="truncated")


def variant(display: str, fmt: str, what: str, hint: str = CONVERT_HINT) -> InputError:
    return InputError(display, f"unsupported {fmt} variant: {what}", hint=hint, code="unsupported_variant")


def header_error(e: BaseException, fmt: str, display: str) -> InputError:
    """A failure while the format's plugin parsed the header."""
    known = _known(e, fmt, display, lines=())
    if known is not None:
        return known
    if fmt == "TIFF" and isinstance(e, KeyError) and e.args and isinstance(e.args[0], int):
        return _tiff_compression(display, e.args[0])  # Pillow looks the compression up in its table
    text = describe(e)
    if isinstance(e, SyntaxError) or text in ("", type(e).__name__):
        return truncated(display, f"not a readable {fmt} header")
    return truncated(display, f"{fmt} header: {text}")


def load_error(e: BaseException, fmt: str, compression: int | None, lines: list[str], display: str) -> InputError:
    """A failure while decoding the pixels; `lines`: what libtiff wrote meanwhile."""
    known = _known(e, fmt, display, lines)
    if known is not None:
        return known
    unsupported = any(_LIBTIFF_UNSUPPORTED.search(line) for line in lines) or compression not in TIFF_COMPRESSIONS
    if fmt == "TIFF" and compression is not None and unsupported:
        return _tiff_compression(display, compression)
    detail = describe(e)
    if lines:
        first = libtiff_summary(lines)
        detail = first if re.fullmatch(r"-?\d+|decoder error -?\d+", detail) else f"{detail}; {first}"
    return truncated(display, detail)


_PIXEL_ROUTINES = re.compile(
    r"^\s*\w*(Decode\w*|ReadProc|ReadStrip|ReadTile|ReadEncoded\w*|ReadRaw\w*|FillStrip|FillTile)\s*:")


def damaged_pixels(lines: list[str]) -> bool:
    """True when libtiff reported an error (not a warning) while decoding pixels, even though Pillow
    went on: its codecs (Fax4Decode, LZWDecode, ...) and strip readers leave garbage behind them.
    Errors about tags and directories are only noise for a file that loads."""
    return any(_PIXEL_ROUTINES.match(line) and "Warning," not in line for line in lines)


def libtiff_summary(lines: list[str]) -> str:
    """The line that matters (the first error, else the first warning), and how many more there were."""
    errors = [line for line in lines if "Warning," not in line]
    first = _tidy((errors or lines)[0])
    more = len(lines) - 1
    return f"libtiff: {first}" + (f" (and {more} more libtiff message{'s' if more > 1 else ''})" if more else "")


def _tidy(line: str) -> str:
    line = re.sub(r"^tempfile\.tif:\s*", "", line).rstrip(".")  # Pillow's name for the file, not the user's
    return line if len(line) <= 160 else line[:157] + "..."


def _known(e: BaseException, fmt: str, display: str, lines: list[str] | tuple[str, ...]) -> InputError | None:
    """Messages that mean a valid file Pillow does not decode, or a limit Pillow applies."""
    text = str(e)
    if fmt == "BMP":
        match = re.match(r"Unsupported BMP (compression|pixel depth|header type|bitfields layout)(?: \((\d+)\))?", text)
        if match:
            kind, number = match.group(1), int(match.group(2)) if match.group(2) else None
            if kind == "compression":
                return variant(display, "BMP", _BMP_COMPRESSIONS.get(number, f"compression {number}"))
            if kind == "pixel depth":
                return variant(display, "BMP", f"{number} bits per pixel")
            if kind == "header type":
                return variant(display, "BMP", f"a {number}-byte info header")
            return variant(display, "BMP", "this bitfields colour layout")
    if fmt == "PNG" and "MAX_TEXT" in text:
        from PIL import PngImagePlugin  # only for these two messages: not at every command's start
    if fmt == "PNG" and "MAX_TEXT_CHUNK" in text:
        return variant(display, "PNG", f"a text chunk larger than {_mib(PngImagePlugin.MAX_TEXT_CHUNK)}",
                       hint=_TEXT_HINT)
    if fmt == "PNG" and "MAX_TEXT_MEMORY" in text:
        return variant(display, "PNG", f"text chunks larger than {_mib(PngImagePlugin.MAX_TEXT_MEMORY)} in all",
                       hint=_TEXT_HINT)
    if fmt == "TIFF" and text.startswith(("unknown pixel mode", "Invalid value for samples per pixel")):
        return variant(display, "TIFF", "this combination of samples, bit depth and colour space")
    if fmt == "TIFF" and text.startswith("Windows Media Photo"):
        return variant(display, "TIFF", "JPEG XR (Windows Media Photo) data")
    if isinstance(e, Image.DecompressionBombError):
        pixels = bomb_pixels(e)
        return truncated(display, f"a frame of {_mp(pixels) if pixels else 'too many pixels'} past the image's size")
    return None


def _tiff_compression(display: str, code: int) -> InputError:
    name = TIFF_COMPRESSIONS.get(code, f"code {code}")
    return InputError(display, f"unsupported TIFF compression: {name}", hint=CONVERT_HINT, code="unsupported_variant")


def check_png_chunks(data: bytes, display: str) -> None:
    """Walk the chunks: a PNG is complete only when its IEND chunk is there, CRC included.

    Pillow stops reading at the end of the image data, so a file cut after it (no IEND, or a last
    chunk without its CRC) would otherwise load as if whole. Only chunk headers are read.
    """
    pos, size = 8, len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > size:
            shown = kind.decode("latin-1") if kind.isalpha() else "a"
            raise truncated(display, f"the PNG ends inside its {shown} chunk")
        if kind == b"IEND":
            if data[pos + 8:end] != b"\xaeB`\x82":
                raise truncated(display, "the PNG's IEND chunk is damaged")
            return
        pos = end
    raise truncated(display, "the PNG ends before its IEND chunk")


def describe(e: BaseException) -> str:
    """Pillow's message, short, without the names of Pillow's internals."""
    text = re.sub(r"\b\w*ImagePlugin\.\w+", "a limit", str(e).strip()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
