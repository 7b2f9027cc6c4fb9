"""HTTP(S) fetching: one pooled requests Session, urllib3 retries, streamed body with a byte cap.

The only module in diffrun that knows `requests` exists. Every failure becomes an `InputError` with
a reason a person understands and a stable `code` (http_status, timeout, deadline, blocked,
connection, too_large, redirect, invalid_url, truncated, protocol); partial bodies are never returned.

Attempts are counted per input and shared with urllib3's retries (`loaders/retries.py`). The
deadline bounds the whole input whatever the peer does: timeouts shrink to the time left and a
watchdog shuts the socket down when it passes (`loaders/deadline.py`).

With the network guard on (`--allow-host`, `--block-private`) fetches go through a second session:
no proxies or netrc from the environment, and connections pinned to the addresses the guard checked.
"""

from __future__ import annotations

import http.cookiejar
import os
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
import requests.exceptions as rex
import urllib3.exceptions as uex
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from diffrun import __version__
from diffrun.errors import InputError
from diffrun.loaders import connections
from diffrun.loaders import deadline as dl
from diffrun.loaders.guard import check_authority, check_url, guard_on
from diffrun.loaders.neterrors import broken_reason, cause, find, timed_out, violation
from diffrun.loaders.policy import FetchPolicy
from diffrun.loaders.redact import display_ref
from diffrun.loaders.retries import (
    RETRY_STATUSES,
    Call,
    DeadlineExceeded,
    Violation,
    attempts,
    backoff_delay,
    make_retry,
    status_text,
)
from diffrun.units import format_size

CHUNK_SIZE = 256 * 1024
POOL_SIZE = 16
USER_AGENT = f"diffrun/{__version__}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
__all__ = ["RETRY_STATUSES", "Fetched", "backoff_delay", "fetch", "make_retry", "session"]
_DRAIN_LIMIT = 64 * 1024  # redirect bodies up to this size are read so the connection is reused


@dataclass
class Fetched:
    data: bytes
    final_url: str
    content_type: str | None


class _BodyBroken(Exception):
    """The response body broke off while streaming: retried in the same attempt budget."""

    def __init__(self, reason: str, code: str = "truncated") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class _Adapter(HTTPAdapter):
    """HTTPAdapter whose pools use diffrun's connection classes (watched; pinned for the guard)."""

    __attrs__: ClassVar[list[str]] = [*HTTPAdapter.__attrs__, "_pinned"]

    def __init__(self, *, pinned: bool, **kw: Any) -> None:
        self._pinned = pinned  # read by init_poolmanager, which HTTPAdapter.__init__ calls
        super().__init__(**kw)

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        super().init_poolmanager(*args, **kw)
        connections.install(self.poolmanager, pinned=self._pinned)

    def proxy_manager_for(self, proxy: str, **kw: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kw)
        if not proxy.lower().startswith("socks"):  # SOCKS pools bring their own connection classes
            connections.install(manager, pinned=self._pinned)
        return manager


_sessions: dict[tuple[object, ...], requests.Session] = {}
_sessions_lock = threading.Lock()
_DEFAULT_POLICY = FetchPolicy()


def session(policy: FetchPolicy | None = None) -> requests.Session:
    """The process-wide pooled Session (one per distinct retry and guard settings; usually exactly one).

    A guarded policy gets its own session, so that its pooled connections only ever went to
    addresses checked under that same policy.
    """
    policy = policy or _DEFAULT_POLICY
    key: tuple[object, ...] = (policy.retries, policy.backoff, policy.max_retry_after)
    if guard_on(policy):
        key += (policy.allow_hosts, policy.block_private)
    found = _sessions.get(key)
    if found is None:
        with _sessions_lock:
            found = _sessions.get(key)
            if found is None:
                found = _sessions[key] = _new_session(policy)
    return found


def _new_session(policy: FetchPolicy) -> requests.Session:
    guarded = guard_on(policy)
    sess = requests.Session()
    sess.headers["User-Agent"] = USER_AGENT
    # One session serves every input (and later every client of a server): a cookie one server sets
    # must never travel with another input's request.
    sess.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    # requests re-reads proxies, CA bundle and netrc from the environment on every request (~2 ms
    # each). Without proxy variables or a netrc file, read the CA bundle once and skip the rest.
    # Under the guard the environment's proxies are never used: the checked address is the one
    # connected to.
    if guarded or _no_proxies_or_netrc():
        sess.trust_env = False
        sess.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = _Adapter(pinned=guarded, pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE,
                       max_retries=make_retry(policy))
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    return sess


def _no_proxies_or_netrc() -> bool:
    """True when requests' trust_env would find no proxy variables and no netrc file."""
    if urllib.request.getproxies():
        return False
    netrc = os.environ.get("NETRC")
    candidates = [netrc] if netrc else ["~/.netrc", "~/_netrc"]
    return not any(os.path.exists(os.path.expanduser(path)) for path in candidates)


def fetch(url: str, policy: FetchPolicy, *, display: str | None = None) -> Fetched:
    """GET `url` into memory under `policy`; raise InputError(display, reason) on any failure."""
    shown = display if display is not None else display_ref(url)
    call = Call(policy)
    token = dl.CURRENT.set(call)
    call.start()
    try:
        while True:
            try:
                return _follow(url, policy, call, shown)
            except _BodyBroken as broken:
                call.failures += 1
                if call.failures > policy.retries:
                    raise InputError(shown, f"{broken.reason} ({attempts(call)})", code=broken.code) from broken
                delay = backoff_delay(policy.backoff, policy.backoff, Retry.DEFAULT_BACKOFF_MAX, call.failures)
                call.wait(delay, last=broken.reason)
    except DeadlineExceeded as err:
        reason = err.reason or f"deadline of {policy.deadline:g} s exceeded {err.detail}".rstrip()
        raise InputError(shown, reason, code="deadline", hint="raise --deadline (0: none)") from err
    except Violation as err:
        raise InputError(shown, str(err), code="protocol") from err
    finally:
        call.finish()
        dl.CURRENT.reset(token)


def _follow(url: str, policy: FetchPolicy, call: Call, shown: str) -> Fetched:
    """One attempt: request, follow redirects by hand (guard on every hop), read the body."""
    _check_scheme(url, shown, "only http(s) URLs can be fetched", "invalid_url")
    seen = {url}
    current = url
    while True:
        resp, sent = _request(current, policy, call, shown)
        try:
            location = resp.headers.get("Location")
            if resp.status_code in REDIRECT_STATUSES and location:
                _discard(resp)
                try:
                    target = urljoin(current, location.strip())
                except ValueError:  # "http://[::1/x": urllib refuses it outright
                    raise InputError(shown, "redirect to an invalid URL", code="redirect") from None
                _check_scheme(target, shown, "redirect to a non-http(s) URL refused", "redirect")
                if target in seen:
                    raise InputError(shown, "redirect loop", code="redirect")
                if len(seen) > policy.max_redirects:
                    raise InputError(shown, f"too many redirects (more than {policy.max_redirects})",
                                     code="redirect")
                seen.add(target)
                current = target
                continue
            if not 200 <= resp.status_code < 300 or resp.status_code == 206:
                raise _status_error(resp.status_code, resp.reason, call, shown)
            data = _read_body(resp, policy, call, shown)
            return Fetched(data, sent, resp.headers.get("Content-Type"))
        finally:
            resp.close()


def _request(url: str, policy: FetchPolicy, call: Call, shown: str) -> tuple[requests.Response, str]:
    """Check one hop (guard: on the URL as it will be sent, pinned to the checked addresses) and GET it."""
    check_authority(url, shown)
    if not guard_on(policy):
        return _get(url, policy, call, shown), url
    sent = _prepare(url, shown)
    token = connections.PIN.set(check_url(url, policy, display=shown, prepared=sent))
    try:
        return _get(sent, policy, call, shown), sent
    finally:
        connections.PIN.reset(token)


def _prepare(url: str, shown: str) -> str:
    """`url` as requests sends it (IDNA host, requoted): what urllib3 parses to connect."""
    try:
        return requests.Request("GET", url).prepare().url or url
    except (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.URLRequired, ValueError) as err:
        raise InputError(shown, f"not a valid URL: {cause(err)}", code="invalid_url") from err


def _get(url: str, policy: FetchPolicy, call: Call, shown: str) -> requests.Response:
    """One GET through the pooled session (urllib3 retries inside); exceptions become InputError."""
    if call.expired():
        raise DeadlineExceeded("before the request")
    timeout = call.timeout()
    try:
        resp = session(policy).get(url, stream=True, allow_redirects=False, timeout=(timeout, timeout))
        if call.fired:  # headers cut off by the watchdog end like complete ones in http.client
            resp.close()
            raise DeadlineExceeded("waiting for the response")
        return resp
    except (rex.ConnectTimeout, rex.ReadTimeout) as err:
        if call.expired():
            raise DeadlineExceeded("waiting for the response") from err
        raise InputError(shown, f"timed out after {attempts(call)}", code="timeout") from err
    except rex.SSLError as err:
        raise InputError(shown, f"TLS error after {attempts(call)}: {cause(err)}", code="connection") from err
    except rex.RetryError as err:
        raise InputError(shown, f"gave up after {attempts(call)}: {cause(err)}", code="connection") from err
    except (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.URLRequired) as err:
        raise InputError(shown, f"not a valid URL: {cause(err)}", code="invalid_url") from err
    except ValueError as err:  # requests parses a redirect's Location even with allow_redirects=False
        raise InputError(shown, "redirect to an invalid URL", code="redirect") from err
    except rex.ConnectionError as err:
        if call.expired():
            raise DeadlineExceeded("waiting for the response") from err
        if timed_out(err):
            raise InputError(shown, f"timed out after {attempts(call)}", code="timeout") from err
        raise InputError(shown, f"connection failed after {attempts(call)}: {cause(err)}",
                         code="connection") from err
    except (rex.RequestException, uex.HTTPError) as err:
        raise InputError(shown, f"request failed: {cause(err)}", code="connection") from err


def _read_body(resp: requests.Response, policy: FetchPolicy, call: Call, shown: str) -> bytes:
    """Stream the (decoded) body under the byte cap and the deadline; never return partial bytes."""
    limit = format_size(policy.max_bytes)
    length = _content_length(resp)
    if length is not None and length > policy.max_bytes:
        raise InputError(shown, f"larger than the {limit} limit (Content-Length: {format_size(length)})",
                         hint="raise --max-input-bytes", code="too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(CHUNK_SIZE):
            size += len(chunk)
            # Both the decoded size (gzip bombs) and the bytes on the wire (endless bodies) are capped.
            if size > policy.max_bytes or resp.raw.tell() > policy.max_bytes:
                raise InputError(shown, f"larger than the {limit} limit (stopped reading)",
                                 hint="raise --max-input-bytes", code="too_large")
            chunks.append(chunk)
            if call.expired():
                raise DeadlineExceeded(_body_progress(resp, length))
    except rex.ContentDecodingError as err:
        encoding = resp.headers.get("Content-Encoding", "compressed")
        raise InputError(shown, f"could not decode the {encoding} body: {cause(err)}", code="protocol") from err
    except (rex.ChunkedEncodingError, rex.ConnectionError, uex.ProtocolError, uex.ReadTimeoutError) as err:
        if call.expired():
            raise DeadlineExceeded(_body_progress(resp, length)) from err
        broken = violation(err)
        if broken is not None:
            raise Violation(broken) from err
        code = "timeout" if timed_out(err) and not find(err, (uex.IncompleteRead,)) else "truncated"
        raise _BodyBroken(broken_reason(err, resp.raw.tell(), length), code) from err
    if call.fired:  # the watchdog ended a body that had no length: what arrived is not all of it
        raise DeadlineExceeded(_body_progress(resp, length))
    return b"".join(chunks)


def _body_progress(resp: requests.Response, length: int | None) -> str:
    of = f" of {length}" if length is not None else ""
    return f"reading the body ({resp.raw.tell()}{of} bytes)"


def _status_error(status: int, reason: str | None, call: Call, shown: str) -> InputError:
    text = status_text(status, reason)
    if status in RETRY_STATUSES and call.failures > 0:
        text += f" after {attempts(call)}"
    hint = None
    if status in (401, 403):
        hint = "the server refused access: check the URL and any credentials or signature in it"
    elif status == 404:
        hint = "check the URL"
    elif status == 206:
        text += ": only part of the file was sent"
    return InputError(shown, text, hint=hint, code="http_status")


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value.split(",")[0].strip())
    except ValueError:
        return None


def _discard(resp: requests.Response) -> None:
    """Read a small redirect body so the connection goes back to the pool; otherwise just drop it."""
    length = _content_length(resp)
    if length is None or length > _DRAIN_LIMIT:
        return
    try:
        for _ in resp.iter_content(CHUNK_SIZE):
            pass
    except (rex.RequestException, uex.HTTPError):
        pass


def _check_scheme(url: str, shown: str, reason: str, code: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as err:
        raise InputError(shown, f"not a valid URL: {err}", code="invalid_url") from err
    if scheme not in ("http", "https"):
        raise InputError(shown, reason, code=code)
