"""data: URIs: RFC 2397 parsing, strict base64, percent-encoding, size cap, lying media types."""

from __future__ import annotations

import base64
from urllib.parse import quote_from_bytes

import images
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffrun.errors import Exit, InputError
from diffrun.loaders import FetchPolicy, load_input
from diffrun.loaders.datauri import parse_data_uri, split_data_uri


def test_valid_base64_png_loads():
    data = images.png(color=images.BLUE)
    loaded = load_input(images.data_uri(data))
    assert loaded.format == "PNG"
    assert loaded.data == data
    assert loaded.image.getpixel((0, 0)) == images.BLUE
    assert loaded.source.startswith("data:image/png;base64,...")


def test_whitespace_inside_base64_is_ignored():
    data = images.png()
    encoded = base64.b64encode(data).decode()
    spaced = "\n ".join(encoded[i:i + 10] for i in range(0, len(encoded), 10))
    assert parse_data_uri(f"data:image/png;base64,{spaced}\r\n") == data


@pytest.mark.parametrize("body, words", [
    ("iVBORw0KGgo!!!!", "invalid base64"),
    ("iVBORw0KGgo", "invalid base64"),          # bad padding
    ("aGVsbG8=aGVsbG8=", "invalid base64"),     # padding in the middle
    ("ab+c-d__", "mixes the standard and URL-safe"),
    ("héllo===", "invalid base64"),
])
def test_broken_base64_is_an_input_error(body, words):
    with pytest.raises(InputError) as info:
        parse_data_uri(f"data:image/png;base64,{body}", display="the-uri")
    assert words in info.value.reason
    assert info.value.source == "the-uri"
    assert info.value.exit == Exit.INPUT


def test_urlsafe_alphabet_is_accepted():
    data = bytes([0xFB, 0xFF, 0xBF] * 5)
    encoded = base64.urlsafe_b64encode(data).decode()
    assert "-" in encoded or "_" in encoded
    assert parse_data_uri(f"data:;base64,{encoded}") == data


def test_percent_escapes_inside_base64_are_undone():
    data = bytes([0xFB, 0xEF, 0xFF])  # "++//"
    encoded = base64.b64encode(b"x" + data).decode().replace("+", "%2B").replace("=", "%3D")
    assert parse_data_uri(f"data:image/png;base64,{encoded}") == b"x" + data


def test_percent_encoded_body():
    assert parse_data_uri("data:text/plain,hello%20world%21%FF") == b"hello world!\xff"
    assert parse_data_uri("data:,") == b""


def test_percent_encoded_png_loads():
    data = images.png(color=images.GREEN)
    loaded = load_input("data:image/png," + quote_from_bytes(data))
    assert loaded.data == data
    assert loaded.image.getpixel((1, 1)) == images.GREEN


def test_missing_comma():
    with pytest.raises(InputError, match="missing ','"):
        parse_data_uri("data:image/png;base64")


def test_text_body_is_not_an_image():
    with pytest.raises(InputError, match="not an image") as info:
        load_input("data:text/plain,just%20some%20words")
    assert "base64" not in info.value.reason


def test_declared_type_is_never_trusted():
    """A JPEG declared as PNG loads as JPEG; HTML declared as PNG is refused as HTML."""
    jpeg = images.jpeg()
    assert load_input(images.data_uri(jpeg, "image/png")).format == "JPEG"
    with pytest.raises(InputError, match="HTML"):
        load_input(images.data_uri(images.HTML, "image/png"))


def test_media_type_parsing():
    parts = split_data_uri("DATA:Image/PNG;charset=x;BASE64,AAAA")
    assert (parts.media_type, parts.is_base64, parts.body) == ("image/png", True, "AAAA")
    assert split_data_uri("data:,x").media_type == "text/plain"
    assert not split_data_uri("data:image/png;base64x,AAAA").is_base64


def test_size_checked_before_decoding():
    data = images.png(size=(64, 64))
    policy = FetchPolicy(max_bytes=len(data) - 1)
    with pytest.raises(InputError, match="too large"):
        load_input(images.data_uri(data), policy)
    with pytest.raises(InputError, match="too large"):
        parse_data_uri("data:," + "A" * 40, max_bytes=10)
    assert load_input(images.data_uri(data), FetchPolicy(max_bytes=len(data))).data == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([base64.b64encode, base64.urlsafe_b64encode]))
def test_base64_round_trip(data, encoder):
    assert parse_data_uri("data:application/octet-stream;base64," + encoder(data).decode()) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["", "/", "/;=,:@"]))
def test_percent_round_trip(data, safe):
    assert parse_data_uri("data:text/plain;charset=utf-8," + quote_from_bytes(data, safe=safe)) == data


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["data:", "data:;base64,", "data:image/png;base64,", "DaTa:,"]))
def test_arbitrary_strings_only_raise_input_error(text, prefix):
    try:
        result = parse_data_uri(prefix + text, max_bytes=100)
    except InputError as e:
        assert e.reason
    else:
        assert isinstance(result, bytes) and len(result) <= 100
