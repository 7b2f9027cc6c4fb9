"""Classify an input reference and read its bytes: path, file://, http(s)://, data:, "-", bytes, PIL.

A reference string is a path unless it starts with a URI scheme diffrun knows (`http`, `https`,
`file`, `data`, any case) or is `-`. Drive-letter strings (`C:\\x.png`, `c:/x.png`) are paths. A
string with some other scheme (`ftp://`, `s3:`) is refused as an unsupported scheme unless a file of
that exact name exists.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from PIL import Image

from diffrun.errors import InputError
from diffrun.loaders.datauri import parse_data_uri
from diffrun.loaders.policy import BYTES_HINT, FetchPolicy
from diffrun.loaders.redact import display_ref
from diffrun.loaders.special import read_special

KINDS = ("path", "file", "http", "data", "stdin", "bytes", "image")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Schemes people actually try; anything else without "//" after the colon is taken as a file name.
_KNOWN_OTHER_SCHEMES = {
    "ftp", "ftps", "sftp", "scp", "ssh", "s3", "gs", "gcs", "az", "abfs", "abfss", "wasb", "wasbs",
    "hdfs", "hf", "blob", "smb", "ws", "wss", "javascript", "mailto", "about", "chrome", "git",
}

_stdin_lock = threading.Lock()
_stdin_used = False


@dataclass
class RawInput:
    data: bytes
    """The exact bytes of the input (b"" for a PIL image passed in)."""
    kind: str
    """One of KINDS."""
    display: str
    """The reference as messages show it: shortened, without credentials."""
    final_url: str | None = None
    """For http(s): the URL after redirects."""
    image: Image.Image | None = None
    """For a PIL image passed in: the image itself."""


def classify(ref: Any) -> str:
    """Which kind of reference `ref` is (one of KINDS); InputError for an unsupported scheme or type."""
    if isinstance(ref, Image.Image):
        return "image"
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(ref, os.PathLike):
        return "path"
    if not isinstance(ref, str):
        raise InputError(display_ref(ref), f"unsupported input type: {type(ref).__name__}", code="unsupported_input")
    if ref == "-":
        return "stdin"
    match = _SCHEME.match(ref)
    if not match or len(match.group(1)) == 1:  # no scheme, or a Windows drive letter
        return "path"
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file":
        return "file"
    if scheme == "data":
        return "data"
    if ref[match.end():].startswith("//") or scheme in _KNOWN_OTHER_SCHEMES:
        if _exists(ref):
            return "path"
        raise InputError(display_ref(ref), f"unsupported scheme: {scheme}:",
                         hint="use a local path, file://, http(s):// or data: URI", code="unsupported_scheme")
    return "path"


def read_source(ref: Any, policy: FetchPolicy | None = None, *, display: str | None = None) -> RawInput:
    """Read the bytes `ref` points at, within `policy.max_bytes`; InputError on any failure."""
    policy = policy or FetchPolicy()
    shown = display if display is not None else display_ref(ref)
    kind = classify(ref)
    if kind == "image":
        return RawInput(b"", kind, shown, image=ref)
    if kind == "bytes":
        data = ref.tobytes() if isinstance(ref, memoryview) else bytes(ref)
        _check_size(len(data), policy, shown)
        return RawInput(data, kind, shown)
    if kind == "stdin":
        return RawInput(_read_stdin(policy, shown), kind, shown)
    if kind == "data":
        return RawInput(parse_data_uri(ref, max_bytes=policy.max_bytes, display=shown), kind, shown)
    if kind == "http":
        return _fetch(ref, policy, shown)
    path = file_uri_to_path(ref, shown) if kind == "file" else _local_path(ref, shown)
    special = read_special(path, policy, shown)  # FIFOs and devices within the deadline; rows: regular files only
    if special is not None:
        return RawInput(special, kind, shown)
    return RawInput(read_file(path, policy, shown), kind, shown)


def file_uri_to_path(uri: str, display: str) -> Path:
    """`file:///a%20b.png` or `file://localhost/a.png` -> Path; other hosts are refused."""
    try:
        parts = urlsplit(uri)
    except ValueError as e:  # "file://[x/a.png": Invalid IPv6 URL
        raise InputError(display, f"invalid file URI: {e}", code="invalid_url") from None
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    if host not in ("", "localhost"):
        raise InputError(display, f"unsupported file URI host: {host} (only local files can be read)",
                         code="unsupported_scheme")
    path = unquote(parts.path)
    if not path:
        raise InputError(display, "invalid file URI: no path", code="invalid_url")
    if re.match(r"^/[A-Za-z]:[/\\]", path) and os.name == "nt":  # file:///C:/x.png
        path = path[1:]
    return Path(path)


def read_file(path: Path, policy: FetchPolicy, display: str) -> bytes:
    """Read a local file, at most `policy.max_bytes` of it, with one clear reason per failure.

    Messages name the path only when the input was not given as that path (a file:// URI), so a
    plain `nope.png` reads `nope.png: not found`, not `nope.png: not found: nope.png`.
    """
    shown = display_ref(str(path))
    where = "" if shown == display else f": {shown}"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _check_size(size, policy, display)
            data = f.read(policy.max_bytes + 1)
    except InputError:
        raise
    except (FileNotFoundError, ValueError):  # ValueError: an embedded NUL character
        raise InputError(display, f"not found{where}", hint="check the path, or quote URLs", code="not_found") from None
    except IsADirectoryError:
        raise InputError(display, f"is a directory{where}", code="not_a_file") from None
    except PermissionError:
        if path.is_dir():  # Windows reports directories as PermissionError
            raise InputError(display, f"is a directory{where}", code="not_a_file") from None
        raise InputError(display, f"permission denied{where}", code="permission_denied") from None
    except NotADirectoryError:
        raise InputError(display, f"not found{where} (a parent is not a directory)", code="not_found") from None
    except OSError as e:  # ELOOP, EIO, ... : still one line naming the input
        if e.errno == errno.ENAMETOOLONG:  # e.g. a bare base64 image: no file can have that name
            raise InputError(display, f"not found{where}", hint="check the path, or quote URLs",
                             code="not_found") from None
        raise InputError(display, f"cannot read{where}: {e.strerror or e}", code="read_error") from None
    _check_size(len(data), policy, display)  # for pipes and special files, whose size is 0
    return data


def _read_stdin(policy: FetchPolicy, display: str) -> bytes:
    global _stdin_used
    with _stdin_lock:
        if _stdin_used:
            raise InputError(display, "standard input can only be read once", hint="use '-' for one input only",
                             code="stdin")
        _stdin_used = True
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise InputError(display, "no standard input to read", code="stdin")
    try:
        data = stream.read(policy.max_bytes + 1)
    except OSError as e:
        raise InputError(display, f"cannot read standard input: {e.strerror or e}", code="read_error") from None
    _check_size(len(data), policy, display)
    return data


def _fetch(url: str, policy: FetchPolicy, display: str) -> RawInput:
    from diffrun.loaders import http  # lazy: requests is imported only when a URL is loaded

    fetched = http.fetch(url, policy, display=display)
    return RawInput(fetched.data, "http", display, final_url=fetched.final_url)


def _local_path(ref: str | os.PathLike, display: str) -> Path:
    if isinstance(ref, str) and not ref.strip():
        raise InputError(display or repr(ref), "empty input reference", code="not_found")
    try:
        return Path(ref).expanduser()
    except RuntimeError:  # "~" with no home directory to expand it to
        return Path(ref)


def _exists(ref: str) -> bool:
    try:
        return Path(ref).expanduser().exists()
    except (OSError, ValueError, RuntimeError):
        return False


def _check_size(n: int, policy: FetchPolicy, display: str) -> None:
    if n > policy.max_bytes:
        limit = policy.max_bytes
        reason = f"more than {limit} bytes" if n == limit + 1 else f"{n} bytes > {limit} bytes"
        raise InputError(display, f"too large: {reason}", hint=BYTES_HINT,
                         code="too_large")
