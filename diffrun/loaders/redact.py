"""What of an input reference reaches messages, logs and recipes: no credentials, short, printable.

A URL is kept as `scheme://host[:port]/path`, plus its query when none of the query's keys looks like a
credential (see `is_credential_key`); `user:password@` and the `#fragment` are always dropped. So
`https://b.s3.amazonaws.com/a.png?X-Amz-Signature=...&X-Amz-Date=...` is recorded as
`https://b.s3.amazonaws.com/a.png`, and `https://cdn.example/a.png?w=512` as it is.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

MAX_SHOWN = 200
MAX_MESSAGE = 1000
"""Longest message a results line or JSON output carries (a server's text can be any length)."""

CREDENTIAL_KEYS = frozenset({
    "key", "api_key", "apikey", "sig", "jwt", "pwd", "pass", "passwd", "hmac", "sid", "phpsessid",
})
"""Query keys that are credentials when they are the whole key (after a vendor prefix such as
`X-Amz-`, `X-Goog-`, `X-Ms-` or `X-`)."""
CREDENTIAL_PARTS = ("token", "secret", "signature", "password", "credential", "session", "auth")
"""Query keys that are credentials when they contain one of these: `access_token`, `X-Amz-Security-Token`,
`X-Goog-Signature`, `X-Goog-Credential`, `client_secret`, `oauth_signature`, `auth`, `session`, ..."""
_PREFIXES = ("x_amz_", "x_goog_", "x_ms_", "x_")

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")


def is_credential_key(key: str) -> bool:
    """True when a query key looks like a credential (case-insensitive; `-` and `_` alike)."""
    name = unquote_plus(key).strip().lower().replace("-", "_")
    if any(part in name for part in CREDENTIAL_PARTS):
        return True
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name in CREDENTIAL_KEYS


def query_has_credentials(query: str) -> bool:
    """True when any key of `a=1&b=2` (or `;`-separated) looks like a credential."""
    return any(is_credential_key(item.split("=", 1)[0]) for item in re.split(r"[&;]", query) if item)


def redact_url(url: str) -> tuple[str, list[str]]:
    """(the URL as recorded, what was removed: "userinfo" and/or "query").

    The authority ends at the first `/`, `\\`, `?` or `#` (urllib3 and browsers end the host at a
    backslash: in `http://h:1\\@x/` the host is `h`, not `x`). Strings that are not `scheme://...` come
    back unchanged."""
    match = _SCHEME.match(url)
    if match is None:
        return url, []
    rest = url[match.end():]
    cut = min((i for i in (rest.find(c) for c in "/\\?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    removed = []
    if "@" in authority:
        authority = authority.rpartition("@")[2]
        removed.append("userinfo")
    tail = tail.split("#", 1)[0]  # never sent to a server; OAuth puts tokens there
    path, question, query = tail.partition("?")
    if question and query_has_credentials(query):
        tail = path
        removed.append("query")
    return match.group() + authority + tail, removed


def strip_credentials(url: str) -> str:
    """The URL without `user:password@`, its fragment, and its query when any key is a credential."""
    return redact_url(url)[0]


def redact_text(text: str) -> str:
    """Free text (a library's message, a server's) with every URL in it passed through strip_credentials."""
    return _URL_IN_TEXT.sub(lambda m: strip_credentials(m.group()), text)


def log_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message as logs and JSON carry it: URLs in it without credentials, at most `limit` characters.
    (Control characters stay: JSON escapes them; printing cleans them.)"""
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
