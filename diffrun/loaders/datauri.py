"""RFC 2397 `data:` URIs: `data:[<mediatype>][;base64],<data>` -> the bytes they carry.

Decisions:
- The declared media type is parsed but never trusted: the decoder sniffs the bytes.
- base64 bodies are validated strictly: ASCII whitespace is removed, percent-escapes (`%2B`, `%3D`)
  are undone, then `base64.b64decode(..., validate=True)`; any other stray character or bad padding
  is an error. The URL-safe alphabet (`-`, `_`) is accepted when used on its own; a body mixing both
  alphabets is refused. Padding is required (as RFC 4648 requires for data URIs).
- Other bodies are percent-decoded (`urllib.parse.unquote_to_bytes`).
- The size is checked against `max_bytes` from the body's length before anything is decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from diffrun.errors import InputError
from diffrun.loaders.policy import BYTES_HINT

_WHITESPACE = re.compile(rb"[ \t\n\r\f\v]+")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


@dataclass(frozen=True)
class DataURI:
    media_type: str
    """As declared (lower-cased, parameters dropped); informative only."""
    is_base64: bool
    body: str


def is_data_uri(text: str) -> bool:
    return text[:5].lower() == "data:"


def split_data_uri(uri: str, *, display: str | None = None) -> DataURI:
    """Split a data URI into its declared media type, encoding flag and raw body."""
    shown = display if display is not None else "data URI"
    if not is_data_uri(uri):
        raise InputError(shown, "not a data URI (must start with 'data:')", code="invalid_data_uri")
    head, comma, body = uri[5:].partition(",")
    if not comma:
        raise InputError(shown, "invalid data URI: missing ',' before the data", code="invalid_data_uri")
    params = [p.strip() for p in head.split(";")]
    is_b64 = len(params) > 1 and params[-1].lower() == "base64"
    media_type = params[0].lower() or "text/plain"
    return DataURI(media_type=media_type, is_base64=is_b64, body=body)


def parse_data_uri(uri: str, *, max_bytes: int | None = None, display: str | None = None) -> bytes:
    """The bytes a data URI carries; InputError for anything malformed or over `max_bytes`."""
    shown = display if display is not None else "data URI"
    parts = split_data_uri(uri, display=shown)
    body = parts.body
    if parts.is_base64:
        return _decode_base64(body, max_bytes, shown)
    if max_bytes is not None and len(body) > 3 * max_bytes:
        # each decoded byte takes at least 1 and at most 3 characters
        raise InputError(shown, f"too large: a body of {len(body)} characters > {max_bytes} bytes",
                         hint=BYTES_HINT,
                         code="too_large")
    try:
        data = unquote_to_bytes(body)
    except UnicodeError as e:
        raise InputError(shown, f"invalid characters in data URI: {e.reason}", code="invalid_data_uri") from None
    _check_size(len(data), max_bytes, shown)
    return data


def _decode_base64(body: str, max_bytes: int | None, shown: str) -> bytes:
    try:
        raw = body.encode("ascii")
    except UnicodeEncodeError:
        raise InputError(shown, "invalid base64 in data URI: non-ASCII characters", code="invalid_data_uri") from None
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    raw = _WHITESPACE.sub(b"", raw)
    _check_size(len(raw) * 3 // 4 - raw[-2:].count(b"="), max_bytes, shown)
    if b"-" in raw or b"_" in raw:
        if b"+" in raw or b"/" in raw:
            raise InputError(shown, "invalid base64 in data URI: mixes the standard and URL-safe alphabets",
                             code="invalid_data_uri")
        raw = raw.translate(_URLSAFE)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(shown, f"invalid base64 in data URI: {e}", code="invalid_data_uri") from None
    _check_size(len(data), max_bytes, shown)
    return data


def _check_size(n: int, max_bytes: int | None, shown: str) -> None:
    if max_bytes is not None and n > max_bytes:
        raise InputError(shown, f"too large: {n} bytes > {max_bytes} bytes",
                         hint=BYTES_HINT, code="too_large")
