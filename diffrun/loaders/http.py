"""HTTP(S) fetching: one pooled requests Session, urllib3 retries, streamed body with a byte cap.

The only module in diffrun that knows `requests` exists. Every failure becomes an `InputError` with
a reason a person understands; partial bodies are never returned.

Attempts are counted per input: `1 + policy.retries` in all, shared between what urllib3 retries
(connection errors, timeouts, retryable statuses) and what this module retries itself (a body that
breaks off while streaming). The shared count and the wall-clock deadline live in a context variable
that the Retry subclass below reads, because requests offers no per-call retry settings.
"""

from __future__ import annotations

import contextvars
import os
import random
import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.client import RemoteDisconnected
from urllib.parse import urljoin, urlsplit

import requests
import requests.exceptions as rex
import urllib3.exceptions as uex
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from diffrun import __version__
from diffrun.errors import InputError
from diffrun.loaders.guard import check_url
from diffrun.loaders.policy import FetchPolicy
from diffrun.loaders.redact import display_ref, strip_credentials
from diffrun.units import format_size

CHUNK_SIZE = 256 * 1024
POOL_SIZE = 16
USER_AGENT = f"diffrun/{__version__}"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({
    408,  # Request Timeout: the server gave up waiting for us; a new attempt usually works
    429,  # Too Many Requests: rate limited; Retry-After says when to come back
    500,  # Internal Server Error: often transient on CDNs and object stores
    502,  # Bad Gateway: a proxy or CDN could not reach the origin
    503,  # Service Unavailable: overloaded or restarting; may send Retry-After
    504,  # Gateway Timeout: the origin was too slow for the proxy in front of it
})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]*")
_DRAIN_LIMIT = 64 * 1024  # redirect bodies up to this size are read so the connection is reused


@dataclass
class Fetched:
    data: bytes
    final_url: str
    content_type: str | None


class _DeadlineExceeded(Exception):
    """Raised (also from inside urllib3's retry loop) when waiting would pass the input's deadline."""


class _BodyBroken(Exception):
    """The response body broke off while streaming: retried in the same attempt budget."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Call:
    """Per-input state shared with the Retry: attempts that failed so far, and the deadline."""

    policy: FetchPolicy
    ends: float | None
    failures: int = 0

    def expired(self) -> bool:
        return self.ends is not None and time.monotonic() >= self.ends

    def timeout(self) -> float:
        """The connect/read timeout, shortened so that one wait cannot run past the deadline."""
        if self.ends is None:
            return self.policy.timeout
        return max(0.001, min(self.policy.timeout, self.ends - time.monotonic()))

    def wait(self, seconds: float) -> None:
        """Sleep before the next attempt, unless that attempt would start past the deadline."""
        if self.ends is not None and time.monotonic() + seconds >= self.ends:
            raise _DeadlineExceeded()
        if seconds > 0:
            time.sleep(seconds)


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("diffrun_fetch_call", default=None)


def backoff_delay(factor: float, jitter: float, cap: float, failures: int) -> float:
    """Exponential backoff with jitter after `failures` failed attempts: factor * 2**(n-1) + U(0, jitter)."""
    if failures < 1 or factor <= 0:
        return 0.0
    return min(cap, factor * 2 ** (failures - 1) + random.random() * jitter)


class _Retry(Retry):
    """urllib3 Retry that caps Retry-After, and inside `fetch` shares its count and deadline."""

    # urllib3 also retries 413 when it carries Retry-After; a 4xx outside RETRY_STATUSES never is.
    RETRY_AFTER_STATUS_CODES = RETRY_STATUSES & Retry.RETRY_AFTER_STATUS_CODES

    def __init__(self, *args, max_retry_after: float = 30.0, **kw) -> None:
        super().__init__(*args, **kw)
        self.max_retry_after = max_retry_after

    def new(self, **kw) -> _Retry:
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)

    def increment(self, *args, **kw) -> _Retry:
        call = _CALL.get()
        if call is not None:
            call.failures += 1
        return super().increment(*args, **kw)

    def is_exhausted(self) -> bool:
        call = _CALL.get()
        if call is not None and call.failures > call.policy.retries:
            return True
        return super().is_exhausted()

    def get_backoff_time(self) -> float:
        call = _CALL.get()
        failures = call.failures if call is not None else len(self.history)
        return backoff_delay(self.backoff_factor, self.backoff_jitter, self.backoff_max, failures)

    def sleep(self, response=None) -> None:
        wait = None
        if response is not None and self.respect_retry_after_header:
            try:
                wait = self.get_retry_after(response)
            except uex.InvalidHeader:
                wait = None
        if not wait:
            wait = self.get_backoff_time()
        call = _CALL.get()
        if call is not None:
            call.wait(wait)
        elif wait > 0:
            time.sleep(wait)


def make_retry(policy: FetchPolicy) -> Retry:
    """The one place that decides what urllib3 retries, and how long it waits in between."""
    return _Retry(
        total=policy.retries,
        status_forcelist=RETRY_STATUSES,  # other 4xx are the caller's mistake: never retried
        allowed_methods=frozenset({"GET"}),
        backoff_factor=policy.backoff,
        backoff_jitter=policy.backoff,
        backoff_max=Retry.DEFAULT_BACKOFF_MAX,
        respect_retry_after_header=True,
        max_retry_after=policy.max_retry_after,
        raise_on_status=False,  # hand back the last response; fetch() raises its own error
        raise_on_redirect=False,
    )


_sessions: dict[tuple[int, float, float], requests.Session] = {}
_sessions_lock = threading.Lock()
_DEFAULT_POLICY = FetchPolicy()


def session(policy: FetchPolicy | None = None) -> requests.Session:
    """The process-wide pooled Session (one per distinct retry settings; usually exactly one)."""
    policy = policy or _DEFAULT_POLICY
    key = (policy.retries, policy.backoff, policy.max_retry_after)
    found = _sessions.get(key)
    if found is None:
        with _sessions_lock:
            found = _sessions.get(key)
            if found is None:
                found = _sessions[key] = _new_session(policy)
    return found


def _new_session(policy: FetchPolicy) -> requests.Session:
    sess = requests.Session()
    sess.headers["User-Agent"] = USER_AGENT
    # requests re-reads proxies, CA bundle and netrc from the environment on every request (~2 ms
    # each). Without proxy variables or a netrc file, read the CA bundle once and skip the rest.
    if _no_proxies_or_netrc():
        sess.trust_env = False
        sess.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE, max_retries=make_retry(policy))
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
    ends = None if policy.deadline is None else time.monotonic() + policy.deadline
    call = _Call(policy, ends)
    token = _CALL.set(call)
    try:
        while True:
            try:
                return _follow(url, policy, call, shown)
            except _BodyBroken as broken:
                call.failures += 1
                if call.failures > policy.retries:
                    raise InputError(shown, f"{broken.reason} ({_attempts(call.failures)})") from broken
                call.wait(backoff_delay(policy.backoff, policy.backoff, Retry.DEFAULT_BACKOFF_MAX, call.failures))
    except _DeadlineExceeded as err:
        raise InputError(shown, f"deadline of {policy.deadline:g} s exceeded") from err
    finally:
        _CALL.reset(token)


def _follow(url: str, policy: FetchPolicy, call: _Call, shown: str) -> Fetched:
    """One attempt: request, follow redirects by hand (guard on every hop), read the body."""
    _check_scheme(url, shown, "only http(s) URLs can be fetched")
    seen = {url}
    current = url
    while True:
        check_url(current, policy, display=shown)
        resp = _get(current, policy, call, shown)
        try:
            location = resp.headers.get("Location")
            if resp.status_code in REDIRECT_STATUSES and location:
                _discard(resp)
                target = urljoin(current, location.strip())
                _check_scheme(target, shown, "redirect to a non-http(s) URL refused")
                if target in seen:
                    raise InputError(shown, "redirect loop")
                if len(seen) > policy.max_redirects:
                    raise InputError(shown, f"too many redirects (more than {policy.max_redirects})")
                seen.add(target)
                current = target
                continue
            if not 200 <= resp.status_code < 300:
                raise _status_error(resp.status_code, resp.reason, call, shown)
            data = _read_body(resp, policy, call, shown)
            return Fetched(data, current, resp.headers.get("Content-Type"))
        finally:
            resp.close()


def _get(url: str, policy: FetchPolicy, call: _Call, shown: str) -> requests.Response:
    """One GET through the pooled session (urllib3 retries inside); exceptions become InputError."""
    if call.expired():
        raise _DeadlineExceeded()
    timeout = call.timeout()
    try:
        return session(policy).get(url, stream=True, allow_redirects=False, timeout=(timeout, timeout))
    except (rex.ConnectTimeout, rex.ReadTimeout) as err:
        if call.expired():
            raise _DeadlineExceeded() from err
        raise InputError(shown, f"timed out after {_attempts(call.failures)}") from err
    except rex.SSLError as err:
        raise InputError(shown, f"TLS error after {_attempts(call.failures)}: {_cause(err)}") from err
    except rex.RetryError as err:
        raise InputError(shown, f"gave up after {_attempts(call.failures)}: {_cause(err)}") from err
    except (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema, rex.URLRequired) as err:
        raise InputError(shown, f"not a valid URL: {_cause(err)}") from err
    except rex.ConnectionError as err:
        if call.expired():
            raise _DeadlineExceeded() from err
        if _timed_out(err):
            raise InputError(shown, f"timed out after {_attempts(call.failures)}") from err
        raise InputError(shown, f"connection failed after {_attempts(call.failures)}: {_cause(err)}") from err
    except (rex.RequestException, uex.HTTPError) as err:
        raise InputError(shown, f"request failed: {_cause(err)}") from err


def _read_body(resp: requests.Response, policy: FetchPolicy, call: _Call, shown: str) -> bytes:
    """Stream the (decoded) body under the byte cap and the deadline; never return partial bytes."""
    limit = format_size(policy.max_bytes)
    length = _content_length(resp)
    if length is not None and length > policy.max_bytes:
        raise InputError(shown, f"larger than the {limit} limit (Content-Length: {format_size(length)})")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(CHUNK_SIZE):
            size += len(chunk)
            # Both the decoded size (gzip bombs) and the bytes on the wire (endless bodies) are capped.
            if size > policy.max_bytes or resp.raw.tell() > policy.max_bytes:
                raise InputError(shown, f"larger than the {limit} limit (stopped reading)")
            chunks.append(chunk)
            if call.expired():
                raise _DeadlineExceeded()
    except rex.ContentDecodingError as err:
        encoding = resp.headers.get("Content-Encoding", "compressed")
        raise InputError(shown, f"could not decode the {encoding} body: {_cause(err)}") from err
    except (rex.ChunkedEncodingError, rex.ConnectionError, uex.ProtocolError, uex.ReadTimeoutError) as err:
        if call.expired():
            raise _DeadlineExceeded() from err
        raise _BodyBroken(_broken_reason(err, resp.raw.tell(), length)) from err
    return b"".join(chunks)


def _broken_reason(err: Exception, got: int, length: int | None) -> str:
    of = f" of {length}" if length is not None else ""
    if _find(err, (uex.IncompleteRead,)):
        return f"body ended after {got}{of} bytes"
    if _timed_out(err):
        return f"timed out reading the body after {got}{of} bytes"
    return f"connection broken after {got}{of} bytes of the body: {_cause(err)}"


def _status_error(status: int, reason: str | None, call: _Call, shown: str) -> InputError:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = reason or "error"
    text = f"HTTP {status} {phrase}"
    if status in RETRY_STATUSES and call.failures > 0:
        text += f" after {_attempts(call.failures)}"
    hint = None
    if status in (401, 403):
        hint = "the server refused access: check the URL and any credentials or signature in it"
    elif status == 404:
        hint = "check the URL"
    return InputError(shown, text, hint=hint)


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


def _check_scheme(url: str, shown: str, reason: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as err:
        raise InputError(shown, f"not a valid URL: {err}") from err
    if scheme not in ("http", "https"):
        raise InputError(shown, reason)


def _attempts(n: int) -> str:
    n = max(n, 1)
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _walk(err: BaseException):
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


def _find(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    return next((item for item in _walk(err) if isinstance(item, types)), None)


def _timed_out(err: BaseException) -> bool:
    """True when a timeout is behind err (urllib3's NewConnectionError subclasses its connect timeout)."""
    return any(
        isinstance(item, (uex.ReadTimeoutError, uex.ConnectTimeoutError, TimeoutError))
        and not isinstance(item, uex.NewConnectionError)
        for item in _walk(err)
    )


def _cause(err: BaseException) -> str:
    """The innermost readable cause: 'Connection refused' rather than a nested repr."""
    if _find(err, (uex.NameResolutionError,)) is not None:
        return "could not resolve the host name"
    if _find(err, (RemoteDisconnected,)) is not None:
        return "the server closed the connection without a response"
    if _find(err, (uex.IncompleteRead,)) is not None:
        return "the body ended early"
    for item in _walk(err):
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
    text = str(err.args[0] if err.args else err)
    # requests and urllib3 quote the URL in some messages ("Invalid URL 'http://user:pw@/x': ...")
    return _URL_IN_TEXT.sub(lambda m: strip_credentials(m.group()), text)[:200]
