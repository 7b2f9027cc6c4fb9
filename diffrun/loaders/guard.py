"""The opt-in network guard: allowed hosts and private-address blocking, checked on every hop.

Off by default, so that local servers keep working. `http.fetch` calls `check_url` before the first
request and before following each redirect, with the URL as requests prepared it: the host judged
is the host urllib3 connects to (`parse_url`), never another parser's reading of the same text. A
host part holding a backslash, whitespace or control characters is refused whether the guard is on
or not (`check_authority`): parsers end such a host in different places, so the name a message or a
check sees would not be the address connected to.

`check_url` returns the `Target` it checked; with `block_private`, the addresses the host resolved
to, and the guarded connection classes (`loaders/connections.py`) connect to exactly those, so a
name whose DNS records change between the check and the connection (DNS rebinding) cannot slip past.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from diffrun.errors import InputError, UsageError
from diffrun.loaders.policy import FetchPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:/*([^/?#]*)")
_BAD_HOST_CHAR = re.compile(r"[\\\s\x00-\x1f\x7f]")
_PATTERN_CHARS = re.compile(r"^(\*\.)?[a-z0-9._\-]+$|^[0-9a-f:.%]+$")


@dataclass(frozen=True)
class Target:
    """A checked URL's connection: urllib3's host (no brackets) and port, and the addresses checked
    (empty when only the name was checked: `--allow-host` without `--block-private`)."""

    host: str
    port: int
    addresses: tuple[str, ...]


def guard_on(policy: FetchPolicy) -> bool:
    return bool(policy.allow_hosts) or policy.block_private


def check_authority(url: str, display: str) -> None:
    """Refuse a host part with a backslash, whitespace or control characters (guard on or off)."""
    match = _AUTHORITY.match(url)
    if match is None:
        return
    authority = match.group(1)
    bad = _BAD_HOST_CHAR.search(authority)
    if bad is None:
        return
    what = "a backslash" if bad.group() == "\\" else "whitespace or a control character"
    try:
        real = _parse_url(url).host
    except ValueError:  # urllib3's LocationParseError is a ValueError
        real = None
    shown = urlsplit_host(url)
    if real and shown and _norm(real) != _norm(shown):
        detail = f": a connection would go to {_clean(real)}, not {_clean(shown)}"
    else:
        detail = ""
    raise InputError(display, f"not a valid URL: {what} in the host part{detail}", code="invalid_url")


def check_url(url: str, policy: FetchPolicy, *, display: str, prepared: str | None = None) -> Target | None:
    """Raise InputError if `policy` forbids fetching `url`; else the checked Target (None: guard off).

    `prepared` is the URL as requests will send it (what urllib3 connects to); `url` the original
    text, whose host must agree with it.
    """
    if not guard_on(policy):
        return None
    check_authority(url, display)
    host, port = _connection_host(url, prepared or url, display)
    if policy.allow_hosts and not host_allowed(host, policy.allow_hosts, port=port):
        ported = any(_split_pattern(p)[1] is not None for p in policy.allow_hosts)
        name = f"{_bracket(host)}:{port}" if ported else host
        raise InputError(
            display,
            f"host {name} is not in the allowed hosts",
            hint="add it with --allow-host HOST[:PORT], or fetch it another way",
            code="blocked",
        )
    if not policy.block_private:
        return Target(host, port, ())  # the name was checked; the connection resolves it
    addresses = resolve(host, port, display=display)
    for address in addresses:
        if is_blocked(address):
            raise InputError(
                display,
                f"host {host} resolves to a private or reserved address ({address}); refused",
                hint="private addresses are blocked by --block-private",
                code="blocked",
            )
    return Target(host, port, tuple(dict.fromkeys(str(a) for a in addresses)))


def host_allowed(host: str, patterns: tuple[str, ...] | list[str], *, port: int | None = None) -> bool:
    """Exact, case-insensitive match, or `*.example.com` for any subdomain of example.com.

    A pattern with a port (`example.com:8443`, `[::1]:8080`) matches that port only; an IP address
    is matched by value (`127.1` is 127.0.0.1) and never by a `*.` pattern. An invalid pattern
    matches nothing.
    """
    host = _norm(host)
    literal = _literal(host)
    for text in patterns:
        pattern, pattern_port = _split_pattern(text)
        if pattern is None or (pattern_port is not None and pattern_port != port):
            continue
        if pattern.startswith("*."):
            if literal is None and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif literal is not None:
            if _literal(pattern) == literal:
                return True
        elif host == pattern:
            return True
    return False


def allow_host_patterns(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`--allow-host` values, normalised; UsageError (exit 2) for one that is not HOST[:PORT]."""
    patterns = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        if _split_pattern(text)[0] is None:
            raise UsageError(
                f"--allow-host: not a host pattern: {_clean(text)!r}",
                hint="use HOST, HOST:PORT, [IPv6]:PORT or *.example.com (no scheme, path or user)",
            )
        patterns.append(text.lower())
    return tuple(patterns)


def resolve(host: str, port: int | None, *, display: str) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal, in any form the resolver takes, to itself)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        reason = err.strerror if isinstance(err, socket.gaierror) and err.strerror else str(err)
        raise InputError(display, f"could not resolve host {host}: {reason}", code="connection") from err
    addresses = []
    for info in infos:
        parsed = _literal(str(info[4][0]))
        if parsed is not None:
            addresses.append(parsed)
    if not addresses:
        raise InputError(display, f"could not resolve host {host}", code="connection")
    return addresses


def is_blocked(address: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved, unspecified and non-global addresses
    (IPv4 inside IPv6 (mapped, 6to4) is judged as the IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and is_blocked(embedded):
            return True
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def urlsplit_host(url: str) -> str | None:
    """The host as Python's urlsplit reads it (None when it cannot)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _connection_host(url: str, prepared: str, display: str) -> tuple[str, int]:
    """urllib3's host and port for `prepared`; refused when urlsplit reads `url`'s host otherwise."""
    try:
        parts = _parse_url(prepared)
    except ValueError as err:  # urllib3's LocationParseError is a ValueError
        raise InputError(display, f"not a valid URL: {err}", code="invalid_url") from err
    if not parts.host:
        raise InputError(display, "the URL has no host", code="invalid_url")
    host = _norm(parts.host)
    port = parts.port or DEFAULT_PORTS.get((parts.scheme or "http").lower(), 80)
    other = urlsplit_host(url)
    if other is None or _norm(_idna(other)) != host:
        raise InputError(
            display,
            f"not a valid URL: its host is read as {_clean(host)} by urllib3 but as {_clean(other or '?')} "
            "by urlsplit; refused",
            code="invalid_url",
        )
    return host, port


def _parse_url(url: str) -> Any:
    """urllib3's parse_url, imported here so that the CLI's option parsing does not load urllib3."""
    from urllib3.util import parse_url

    return parse_url(url)


def _split_pattern(text: str) -> tuple[str | None, int | None]:
    """An allow-host pattern as (host, port or None); (None, None) when it is not a valid pattern."""
    text = text.strip().lower()
    port_text = None
    if text.startswith("["):
        host, found, rest = text[1:].partition("]")
        if not found or (rest and not rest.startswith(":")):
            return None, None
        port_text = rest[1:] if rest else None
        if _literal(host) is None:
            return None, None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, or a bare IPv6 address (no port possible)
    host = _idna(host.rstrip("."))
    if not host or _PATTERN_CHARS.match(host) is None or (":" in host and _literal(host) is None):
        return None, None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None, None
    return host, int(port_text)


def _idna(host: str) -> str:
    """A non-ASCII host name as requests sends it (IDNA, UTS #46); ASCII unchanged."""
    if host.isascii():
        return host
    prefix = "*." if host.startswith("*.") else ""
    try:
        import idna  # a requests dependency; only needed for non-ASCII names

        return prefix + idna.encode(host[len(prefix):], uts46=True).decode("ascii")
    except (ImportError, UnicodeError, ValueError):
        return host


def _norm(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:100]


def _literal(host: str) -> IPAddress | None:
    """`host` as an IP address, also in the legacy IPv4 forms the system resolver accepts (127.1,
    0x7f.0.0.1, 2130706433), which it would connect to without a DNS look-up."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and text[0].isdigit() and all(c in "0123456789abcdefxABCDEFX." for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None
