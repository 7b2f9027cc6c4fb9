"""Test images built in code: real encoder output from Pillow, plus a few hand-made headers."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png(size=(8, 6), color=RED, mode="RGB") -> bytes:
    return encode(Image.new(mode, size, color), "PNG")


def jpeg(size=(16, 12), color=RED, quality=95) -> bytes:
    return encode(Image.new("RGB", size, color), "JPEG", quality=quality)


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def two_colour(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    """Left half `left`, right half `right`: shows where a rotation moved things."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 40x20 JPEG (red left, blue right) whose EXIF says: rotate before showing."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(two_colour(), "JPEG", quality=95, exif=exif.tobytes())


def rgba_png() -> bytes:
    """4x2 RGBA: left column fully transparent black, others opaque green."""
    image = Image.new("RGBA", (4, 2), (*GREEN, 255))
    for y in range(2):
        image.putpixel((0, y), (0, 0, 0, 0))
    return encode(image, "PNG")


def png16(values=((0, 32768, 65535),)) -> bytes:
    return encode(Image.fromarray(np.array(values, dtype=np.uint16)), "PNG")


def cmyk_jpeg(color=(255, 0, 0, 0)) -> bytes:
    return encode(Image.new("CMYK", (8, 8), color), "JPEG", quality=95)


def animated_gif(colors=(RED, GREEN, BLUE)) -> bytes:
    frames = [Image.new("RGB", (8, 8), c) for c in colors]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def palette_png_with_transparency() -> bytes:
    """P image: index 0 (black) is transparent, index 1 is red; left column index 0."""
    image = Image.new("P", (3, 2), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    for y in range(2):
        image.putpixel((0, y), 0)
    return encode(image, "PNG", transparency=0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed-looking PNG whose IHDR claims `width` x `height` 1-bit pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


HTML = b"<!DOCTYPE html>\n<html><head><title>Not found</title></head><body>nope</body></html>\n"
PSD = b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + struct.pack(">II", 8, 8) + b"\x00\x08\x00\x03" + b"\x00" * 64
