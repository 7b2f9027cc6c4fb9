"""How an input reference is shown in messages and logs: short, and without credentials."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MAX_SHOWN = 200
_SECRET_QUERY_KEYS = re.compile(
    r"(?i)([?&](?:token|access_token|key|api_key|apikey|sig|signature|password|pwd|x-amz-signature|x-amz-credential)=)"
    r"[^&#]*"
)


def strip_credentials(url: str) -> str:
    """Remove `user:password@` and secret-looking query values from a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https", "file") or not parts.netloc:
        return url
    # The host part ends at a backslash for urllib3 (and browsers): in h:1\@x the host is h, not x.
    authority, backslash, rest = parts.netloc.partition("\\")
    netloc = authority.rsplit("@", 1)[-1] + backslash + rest
    query = _SECRET_QUERY_KEYS.sub(r"\1***", "?" + parts.query)[1:] if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def display_ref(ref: object, limit: int = MAX_SHOWN) -> str:
    """A reference as messages show it: credentials removed, data URIs and long strings shortened."""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return f"<{len(ref)} bytes>"
    if not isinstance(ref, str):
        if hasattr(ref, "size") and hasattr(ref, "mode"):
            return f"<PIL image {ref.mode} {ref.size[0]}x{ref.size[1]}>"
        ref = str(ref)
    text = ref
    if text[:5].lower() == "data:":
        head = text.split(",", 1)[0]
        text = f"{head},...({len(ref)} chars)"
    else:
        text = strip_credentials(text)
    text = "".join(c if c.isprintable() else "?" for c in text)
    if len(text) > limit:
        keep = limit - 3
        text = text[: keep * 2 // 3] + "..." + text[-(keep - keep * 2 // 3):]
    return text
