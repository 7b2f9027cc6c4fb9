"""Reading the exceptions requests and urllib3 raise: what is behind them, in words a person reads.

requests wraps urllib3, which wraps http.client and the socket error; these helpers walk that
chain so that `loaders/http.py` can say "Connection refused" rather than a nested repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.client import HTTPException, LineTooLong, RemoteDisconnected

import urllib3.exceptions as uex

from diffrun.loaders.redact import strip_credentials

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]*")


def walk(err: BaseException) -> Iterator[BaseException]:
    """err, then everything nested in it: args, `reason` (urllib3), __cause__ and __context__."""
    stack: list[object] = [err]
    seen: set[int] = set()
    while stack:
        item = stack.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(item.args)
        stack.extend((getattr(item, "reason", None), item.__cause__, item.__context__))


def find(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    return next((item for item in walk(err) if isinstance(item, types)), None)


def timed_out(err: BaseException) -> bool:
    """True when a timeout is behind err (urllib3's NewConnectionError subclasses its connect timeout)."""
    return any(
        isinstance(item, (uex.ReadTimeoutError, uex.ConnectTimeoutError, TimeoutError))
        and not isinstance(item, uex.NewConnectionError)
        for item in walk(err)
    )


def violation(err: BaseException | None) -> str | None:
    """The reason, when err is the server breaking HTTP/1.1's limits (a 64 KB line, over 100 headers):
    a broken server, not a flaky network, so it is not retried."""
    if err is None:
        return None
    for item in walk(err):
        if isinstance(item, LineTooLong) or (type(item) is HTTPException and "got more than" in str(item)):
            return f"protocol error: {str(item)[:200]}"
    return None


def cause(err: BaseException) -> str:
    """The innermost readable cause: 'Connection refused' rather than a nested repr."""
    if find(err, (uex.NameResolutionError,)) is not None:
        return "could not resolve the host name"
    if find(err, (RemoteDisconnected,)) is not None:
        return "the server closed the connection without a response"
    if find(err, (uex.IncompleteRead,)) is not None:
        return "the body ended early"
    for item in walk(err):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    text = str(err.args[0] if err.args else err)
    # requests and urllib3 quote the URL in some messages ("Invalid URL 'http://user:pw@/x': ...")
    return _URL_IN_TEXT.sub(lambda m: strip_credentials(m.group()), text)[:200]


def broken_reason(err: BaseException, got: int, length: int | None) -> str:
    """Why a body broke off after `got` bytes (of `length`, when announced)."""
    of = f" of {length}" if length is not None else ""
    if find(err, (uex.IncompleteRead,)):
        return f"body ended after {got}{of} bytes"
    if timed_out(err):
        return f"timed out reading the body after {got}{of} bytes"
    return f"connection broken after {got}{of} bytes of the body: {cause(err)}"
