"""Images that are valid but unusual, damaged, or in formats outside the allow-list: built in code."""

from __future__ import annotations

import io
import struct
import tarfile

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


RGB = Image.new("RGB", (8, 6), (200, 10, 10))


def outside_allow_list() -> dict[str, list[bytes]]:
    """Real files in formats Pillow identifies but diffrun does not decode, by the name errors give."""
    pcx = encode(RGB, "PCX")
    return {
        "TGA": [encode(RGB, "TGA"), encode(RGB.convert("L"), "TGA"), encode(RGB.convert("P"), "TGA"),
                encode(RGB, "TGA", compression="tga_rle")],
        "PPM": [encode(RGB, "PPM"), encode(RGB.convert("L"), "PPM"), encode(RGB.convert("1"), "PPM"),
                encode(RGB.convert("F"), "PPM"), b"P2\n2 2\n255\n0 1 2 3\n"],
        "PCX": [pcx],
        "DCX": [struct.pack("<III", 987654321, 12, 0) + pcx],
        "XBM": [encode(RGB.convert("1"), "XBM")],
        "XPM": [b'/* XPM */\nstatic char *x[] = {\n"1 1 1 1",\n"a c #ff0000",\n"a"};\n'],
        "SGI": [encode(RGB, "SGI")],
        "IM": [encode(RGB, "IM")],
        "BLP": [encode(RGB.convert("P"), "BLP")],
        "ICO": [encode(Image.new("RGB", (16, 16)), "ICO")],
        "QOI": [encode(RGB, "QOI")],
    }


def tar_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        body = encode(RGB, "PNG")
        info = tarfile.TarInfo("a.png")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def bmp(compression: int, bits: int = 32, masks: tuple[int, int, int, int] | None = None,
        payload: bytes = b"") -> bytes:
    """A BMP with a BITMAPV4 header (108 bytes) declaring `compression` (3: bitfields, 4: JPEG, 5: PNG)."""
    width, height = 4, 2
    pixels = payload or bytes(width * height * bits // 8)
    r, g, b, a = masks or (0, 0, 0, 0)
    info = struct.pack("<IiiHHIIiiII", 108, width, height, 1, bits, compression, len(pixels), 2835, 2835, 0, 0)
    info += struct.pack("<IIII", r, g, b, a) + b"BGRs" + bytes(36) + bytes(12)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


def patch_tiff_tag(data: bytes, tag: int, value: int, count: int | None = None) -> bytes:
    """Set an inline SHORT or LONG value (and optionally the count) of `tag` in a little-endian TIFF's first IFD."""
    assert data[:2] == b"II"
    ifd = struct.unpack_from("<I", data, 4)[0]
    out = bytearray(data)
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        found, kind = struct.unpack_from("<HH", data, entry)
        if found == tag:
            if count is not None:
                struct.pack_into("<I", out, entry + 4, count)
            struct.pack_into("<H" if kind == 3 else "<I", out, entry + 8, value)
            return bytes(out)
    raise KeyError(tag)


def webp_tiff() -> bytes:
    """A TIFF that says its strips are WebP-compressed (this libtiff has no WebP codec)."""
    return patch_tiff_tag(encode(Image.new("RGB", (16, 16), (10, 200, 30)), "TIFF"), 259, 50001)


def damaged_fax_tiff() -> bytes:
    """A CCITT Group 4 TIFF whose strip is scrambled: libtiff's Fax4Decode complains, from C, on fd 2."""
    bits = np.random.default_rng(0).integers(0, 2, (256, 256), dtype=np.uint8) * 255
    noise = Image.fromarray(bits).convert("1")
    data = bytearray(encode(noise, "TIFF", compression="group4"))
    with Image.open(io.BytesIO(bytes(data))) as im:
        start, length = im.tag_v2[273][0], im.tag_v2[279][0]
    for k in range(start + 4, start + length, 3):
        data[k] ^= 0x5A
    return bytes(data)


def bad_tag_tiff() -> bytes:
    """An LZW TIFF whose RowsPerStrip has two values: libtiff's TIFFFetchNormalTag refuses it."""
    return patch_tiff_tag(encode(Image.new("RGB", (16, 16), (1, 2, 3)), "TIFF", compression="tiff_lzw"),
                          278, 16, count=2)


def float_tiff(width: int, height: int) -> bytes:
    """A float32 TIFF (mode F), smooth, so it compresses to a small file."""
    row = np.linspace(0.0, 1.0, width, dtype=np.float32)
    return encode(Image.fromarray(np.tile(row, (height, 1))), "TIFF", compression="tiff_adobe_deflate")


def png16(width: int, height: int) -> bytes:
    row = np.linspace(0, 65535, width).astype(np.uint16)
    return encode(Image.fromarray(np.tile(row, (height, 1))), "PNG", compress_level=1)


def rgba_png(width: int, height: int) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 200, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    return encode(image, "PNG", compress_level=1)
