"""Naming what an input is: formats outside the allow-list, unsupported variants, truncation, the pixel cap."""

from __future__ import annotations

import struct
import threading
import zlib

import badimages
import images
import pytest
from PIL import Image

from diffrun.errors import InputError
from diffrun.loaders import FetchPolicy, load_input, load_many
from diffrun.loaders.decode import decode_image


def _refusal(data: bytes, policy: FetchPolicy | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        decode_image(data, policy, display="x")
    return info.value


@pytest.mark.parametrize(("name", "data"), [(name, data) for name, files in badimages.outside_allow_list().items()
                                            for data in files])
def test_formats_outside_the_allow_list_are_named(name: str, data: bytes) -> None:
    """An uncompressed TGA is not a CUR, a PPM is not "unrecognised data"."""
    error = _refusal(data)
    assert error.reason == f"unsupported image format: {name}"
    assert error.code == "unsupported_format" and error.hint.startswith("supported formats: JPEG, PNG")


def test_archives_are_named() -> None:
    error = _refusal(badimages.tar_archive())
    assert (error.reason, error.code) == ("not an image (looks like a tar archive)", "not_an_image")
    assert _refusal(b"\x1f\x8b\x08\x00" + bytes(20)).code == "not_an_image"


@pytest.mark.parametrize(("data", "reason"), [
    (badimages.bmp(5, payload=badimages.encode(badimages.RGB, "PNG")), "unsupported BMP variant: embedded PNG"),
    (badimages.bmp(4, payload=badimages.encode(badimages.RGB, "JPEG")), "unsupported BMP variant: embedded JPEG"),
    (badimages.bmp(3, masks=(0x3FF00000, 0xFFC00, 0x3FF, 0)), "unsupported BMP variant: this bitfields colour layout"),
    (badimages.webp_tiff(), "unsupported TIFF compression: WEBP"),
])
def test_valid_files_in_unsupported_variants_are_not_called_corrupt(data: bytes, reason: str) -> None:
    error = _refusal(data)
    assert (error.reason, error.code) == (reason, "unsupported_variant")
    assert decode_image(badimages.bmp(3, masks=(0xFF0000, 0xFF00, 0xFF, 0)), display="x").format == "BMP"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_text_chunk_limit_has_no_pillow_names() -> None:
    png = images.png()
    text = _chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"x" * (2 * 1024 * 1024)))
    error = _refusal(png[:33] + text + png[33:])  # after IHDR
    assert error.reason == "unsupported PNG variant: a text chunk larger than 1 MiB"
    assert error.code == "unsupported_variant" and "Plugin" not in str(error) and "MAX_" not in str(error)


@pytest.mark.parametrize(("cut", "detail"), [
    (12, "the PNG ends before its IEND chunk"),  # IEND missing altogether
    (4, "the PNG ends inside its IEND chunk"),  # IEND without its CRC
    (1, "the PNG ends inside its IEND chunk"),
])
def test_png_missing_iend_or_its_crc_is_truncated(cut: int, detail: str) -> None:
    """Pillow stops at the end of the pixel data; the README promises a cut PNG is refused."""
    data = images.encode(images.two_colour((30, 20)), "PNG")
    assert decode_image(data, display="x").width == 30
    error = _refusal(data[:-cut])
    assert (error.reason, error.code) == (f"truncated or corrupt image data ({detail})", "truncated")


def test_real_truncation_is_still_truncated() -> None:
    jpeg = images.encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG", quality=90)
    assert _refusal(jpeg[: len(jpeg) // 2]).code == "truncated"
    assert _refusal(images.encode(images.two_colour(), "PNG")[:-30]).code == "truncated"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "GIF", "WEBP", "BMP"])
def test_max_pixels_is_the_only_limit(monkeypatch, fmt: str) -> None:
    """Above Pillow's own limit (here lowered to 1 MP, so 2 MP trips its error), diffrun's cap decides."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = images.encode(Image.new("L", (2000, 1500), 128), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    decoded = decode_image(data, FetchPolicy(max_pixels=4_000_000), mode="L", display="x")
    assert decoded.image.size == (2000, 1500) and decoded.image.getpixel((1999, 1499)) == 128
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # put back
    error = _refusal(data, FetchPolicy(max_pixels=2_500_000))
    assert error.reason == "too many pixels: 2000×1500 = 3.0 MP > 2.5 MP (--max-pixels)"
    assert error.code == "too_many_pixels" and error.hint == "raise --max-pixels if the image is trusted"


def test_lifting_pillows_limit_is_safe_across_threads(monkeypatch) -> None:
    """Concurrent big and small decodes: Pillow's limit is restored to what it was, whatever the order."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    big = images.encode(Image.new("L", (2000, 1500), 7), "PNG")
    small = images.png()
    policy = FetchPolicy(max_pixels=4_000_000)
    results = list(load_many([big, small] * 6, policy, workers=6, mode="L"))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(Image.MAX_IMAGE_PIXELS))
    thread.start()
    thread.join()
    assert seen == [1_000_000]


def test_pil_image_passed_in_uses_the_same_message() -> None:
    with pytest.raises(InputError) as info:
        load_input(Image.new("1", (3000, 2000)), FetchPolicy(max_pixels=1_000_000))
    assert info.value.reason == "too many pixels: 3000×2000 = 6.0 MP > 1.0 MP (--max-pixels)"
