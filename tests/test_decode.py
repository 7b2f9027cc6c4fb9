"""Decoding: allow-list, pixel cap before decoding, eager load, EXIF, alpha, 16-bit, CMYK, masks."""

from __future__ import annotations

import contextlib
import warnings

import images
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from diffrun.errors import InputError
from diffrun.loaders import FetchPolicy, load_input
from diffrun.loaders.decode import ALLOWED_FORMATS, decode_image, sniff_format


def test_exif_orientation_is_applied():
    decoded = decode_image(images.exif_rotated_jpeg(6), display="x")
    assert (decoded.width, decoded.height) == (20, 40)
    assert decoded.image.size == (20, 40)
    # orientation 6: rotate 90 degrees clockwise, so the stored left (red) half ends up on top
    top, bottom = decoded.image.getpixel((10, 2)), decoded.image.getpixel((10, 37))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_composited_onto_white_by_default():
    image = decode_image(images.rgba_png(), display="x").image
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)  # fully transparent black -> background, not black
    assert image.getpixel((3, 1)) == images.GREEN


def test_rgba_composited_onto_custom_background():
    image = decode_image(images.rgba_png(), FetchPolicy(background=(10, 20, 30)), display="x").image
    assert image.getpixel((0, 1)) == (10, 20, 30)
    assert image.getpixel((2, 0)) == images.GREEN


def test_rgba_mode_keeps_alpha():
    image = decode_image(images.rgba_png(), mode="RGBA", display="x").image
    assert image.getpixel((0, 0))[3] == 0 and image.getpixel((1, 0)) == (*images.GREEN, 255)


def test_palette_with_transparency():
    decoded = decode_image(images.palette_png_with_transparency(), display="x")
    assert decoded.original_mode == "P"
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.image.getpixel((2, 1)) == images.RED


def test_16bit_png_is_scaled_not_clipped():
    decoded = decode_image(images.png16(), display="x")
    assert decoded.original_mode.startswith("I;16")
    assert [decoded.image.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    mask = decode_image(images.png16(((0, 257, 32768, 65535),)), mode="L", display="x").image
    assert list(np.asarray(mask)[0]) == [0, 1, 128, 255]


def test_float_and_32bit_images_are_scaled():
    tiff_f = images.encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), "TIFF")
    assert list(np.asarray(decode_image(tiff_f, mode="L", display="x").image)[0]) == [0, 128, 255]
    tiff_i = images.encode(Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32)), "TIFF")
    assert list(np.asarray(decode_image(tiff_i, mode="L", display="x").image)[0]) == [0, 4, 255]


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_image(images.cmyk_jpeg((255, 0, 0, 0)), display="x")
    assert decoded.original_mode == "CMYK"
    r, g, b = decoded.image.getpixel((4, 4))
    assert r < 30 and g > 225 and b > 225  # pure cyan ink -> cyan, not its inverse (red)


def test_animated_gif_gives_first_frame():
    decoded = decode_image(images.animated_gif(), display="x")
    assert decoded.format == "GIF"
    assert decoded.image.getpixel((3, 3)) == images.RED
    assert getattr(decoded.image, "n_frames", 1) == 1


@pytest.mark.parametrize("fmt, params", [
    ("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {}), ("PNG", {}), ("GIF", {}),
])
def test_other_allowed_formats(fmt, params):
    data = images.encode(images.two_colour((10, 4)), fmt, **params)
    decoded = decode_image(data, display="x")
    assert decoded.format == fmt
    assert decoded.image.getpixel((0, 0)) == images.RED
    assert decoded.image.getpixel((9, 3)) == images.BLUE


@pytest.mark.skipif("AVIF" not in ALLOWED_FORMATS, reason="this Pillow has no AVIF")
def test_avif():
    data = images.encode(Image.new("RGB", (16, 16), images.RED), "AVIF", quality=90)
    decoded = decode_image(data, display="x")
    assert decoded.format == "AVIF"
    r, g, b = decoded.image.getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50


def test_mask_mode_l_composites_first():
    image = decode_image(images.rgba_png(), FetchPolicy(background=(0, 0, 0)), mode="L", display="m").image
    assert image.mode == "L"
    assert image.getpixel((0, 0)) == 0
    assert image.getpixel((1, 0)) == round(0.587 * 255)  # green's luma
    white = decode_image(images.rgba_png(), mode="L", display="m").image
    assert white.getpixel((0, 0)) == 255


def test_output_is_detached_and_loaded():
    image = decode_image(images.png(), display="x").image
    assert not isinstance(image, ImageFile.ImageFile)
    assert getattr(image, "fp", None) is None
    image.putpixel((0, 0), (1, 2, 3))  # loaded and writable


def test_truncated_jpeg():
    data = images.encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG", quality=90)
    for cut in (len(data) // 2, 200):
        with pytest.raises(InputError, match="truncated or corrupt image data"):
            decode_image(data[:cut], display="cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_decompression_bomb_refused_before_decoding():
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    with pytest.raises(InputError, match="too many pixels"):
        decode_image(images.png_header_claiming(100_000, 100_000), display="bomb")
    with pytest.raises(InputError, match="too many pixels"):
        decode_image(images.png_header_claiming(10_000, 9_000), display="bomb")
    # the header claims 3000x3000 but holds almost no data: refused by the cap, not by a decode error
    with pytest.raises(InputError, match=r"too many pixels: 3000×3000 = 9.0 MP > 1.0 MP \(--max-pixels\)"):
        decode_image(images.png_header_claiming(3000, 3000), FetchPolicy(max_pixels=1_000_000), display="b")
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


def test_real_large_1bit_image_refused_by_policy():
    data = images.encode(Image.new("1", (4000, 3000), 1), "PNG")
    assert len(data) < 20_000
    with pytest.raises(InputError, match=r"too many pixels: 4000×3000 = 12.0 MP > 10.0 MP \(--max-pixels\)"):
        decode_image(data, FetchPolicy(max_pixels=10_000_000), display="big")
    assert decode_image(data, FetchPolicy(max_pixels=12_000_000), mode="L", display="big").width == 4000


@pytest.mark.parametrize("name, data", [
    ("EPS", images.encode(Image.new("RGB", (4, 4)), "EPS")),
    ("PSD", images.PSD),
    ("ICO", images.encode(Image.new("RGB", (16, 16)), "ICO")),
    ("JPEG 2000", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40),
    ("FITS", b"SIMPLE  =                    T" + b" " * 50),
])
def test_refused_formats(name, data):
    with pytest.raises(InputError, match=f"unsupported image format: {name}"):
        decode_image(data, display="x")


@pytest.mark.parametrize("data, words", [
    (images.HTML, "looks like HTML"),
    (b"\xef\xbb\xbf  <html lang=en>", "looks like HTML"),
    (b'{"error": "forbidden"}', "looks like JSON"),
    (b"Access denied\n", "looks like text"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip"),
    (b"", "empty"),
    (bytes(range(7, 40)), "unrecognised"),
])
def test_non_images_refused(data, words):
    with pytest.raises(InputError, match=words):
        sniff_format(data, "x")


def test_sniffed_format_is_the_only_one_tried():
    """A BMP header glued to PNG bytes is read as BMP (and fails), never retried as PNG."""
    with pytest.raises(InputError, match="corrupt"):
        decode_image(b"BM" + images.png()[2:], display="x")


def test_max_bytes_applies():
    data = images.png()
    with pytest.raises(InputError, match="too large"):
        decode_image(data, FetchPolicy(max_bytes=len(data) - 1), display="x")


_MAGICS = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
           b"RIFF\x10\x00\x00\x00WEBP", b"\x00\x00\x00\x1cftypavif"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_MAGICS), st.binary(max_size=400))
def test_random_bytes_only_raise_input_error(magic, tail):
    try:
        loaded = load_input(magic + tail)
    except InputError as e:
        assert e.reason and e.source.startswith("<")
    else:
        assert loaded.image.mode == "RGB"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_mutated_real_images_only_raise_input_error(noise):
    base = images.encode(images.two_colour((12, 8)), ["PNG", "GIF", "BMP", "TIFF", "WEBP"][noise[0] % 5])
    data = bytearray(base)
    for i, byte in enumerate(noise[1:40]):
        data[(i * 7919 + byte) % len(data)] = byte
    with contextlib.suppress(InputError):
        load_input(bytes(data[: max(8, len(data) - noise[0] % 50)]))


def test_memory_running_out_while_decoding_is_out_of_memory_not_a_damaged_input(monkeypatch):
    """Within --max-pixels, a MemoryError while the pixels decode is the machine's shortage (exit 5),
    not "truncated or corrupt" (exit 3): the same bytes load on a machine with more memory."""
    from diffrun.errors import Exit, OutOfMemoryError

    def short_of_memory(self):
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", short_of_memory)
    with pytest.raises(OutOfMemoryError) as info:
        load_input(images.png(size=(32, 16)))
    assert info.value.exit == Exit.OUT_OF_MEMORY
    assert "out of memory decoding its 32x16 PNG pixels" in info.value.message
