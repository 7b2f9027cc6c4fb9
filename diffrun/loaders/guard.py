"""The opt-in network guard: allowed hosts and private-address blocking, checked on every hop.

Off by default, so that local servers keep working. `http.fetch` calls `check_url` before the first
request and before following each redirect.

Known gap (DNS rebinding): the host is resolved here and again by the connection that follows, so a
name whose records change between the two look-ups can slip past `block_private`. Closing it means
connecting to the checked address itself (a custom connection class); acceptable for now.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from diffrun.errors import InputError
from diffrun.loaders.policy import FetchPolicy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_url(url: str, policy: FetchPolicy, *, display: str) -> None:
    """Raise InputError if `policy` forbids fetching `url` (allowed hosts, private addresses)."""
    if not policy.allow_hosts and not policy.block_private:
        return
    host, port = _host_port(url, display)
    if policy.allow_hosts and not host_allowed(host, policy.allow_hosts):
        raise InputError(
            display,
            f"host {host} is not in the allowed hosts",
            hint="add it to the allowed hosts, or fetch it another way",
        )
    if policy.block_private:
        for address in resolve(host, port, display=display):
            if is_blocked(address):
                raise InputError(
                    display,
                    f"host {host} resolves to a private or reserved address ({address}); refused",
                    hint="private addresses are blocked by the network guard",
                )


def host_allowed(host: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Exact, case-insensitive match, or `*.example.com` for any subdomain of example.com."""
    host = _norm(host)
    for pattern in patterns:
        pattern = _norm(pattern)
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def resolve(host: str, port: int | None, *, display: str) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise InputError(display, f"could not resolve host {host}: {err}") from err
    addresses = []
    for info in infos:
        parsed = _literal(str(info[4][0]))
        if parsed is not None:
            addresses.append(parsed)
    if not addresses:
        raise InputError(display, f"could not resolve host {host}")
    return addresses


def is_blocked(address: IPAddress) -> bool:
    """True for loopback, private, link-local, multicast, reserved, unspecified and non-global addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
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


def _host_port(url: str, display: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise InputError(display, f"not a valid URL: {err}") from err
    if not host:
        raise InputError(display, "the URL has no host")
    return host, port


def _norm(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
