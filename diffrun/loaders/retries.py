"""What urllib3 retries inside `fetch`, and the per-input state its retries share.

Attempts are counted per input: `1 + policy.retries` in all, shared between what urllib3 retries
(connection errors, timeouts, retryable statuses) and what `loaders/http.py` retries itself (a body
that breaks off while streaming). The count and the deadline live in the input's `Call`, a
`Deadline` in a context variable, because requests offers no per-call retry settings.
"""

from __future__ import annotations

import random
import time
from http import HTTPStatus
from typing import Any

import urllib3.exceptions as uex
from urllib3.util.retry import Retry

from diffrun.loaders import deadline as dl
from diffrun.loaders.neterrors import cause, violation
from diffrun.loaders.policy import FetchPolicy

RETRY_STATUSES = frozenset({
    408,  # Request Timeout: the server gave up waiting for us; a new attempt usually works
    429,  # Too Many Requests: rate limited; Retry-After says when to come back
    500,  # Internal Server Error: often transient on CDNs and object stores
    502,  # Bad Gateway: a proxy or CDN could not reach the origin
    503,  # Service Unavailable: overloaded or restarting; may send Retry-After
    504,  # Gateway Timeout: the origin was too slow for the proxy in front of it
})


class DeadlineExceeded(Exception):
    """Raised (also from inside urllib3's retry loop) when the deadline passed or waiting would pass it.

    `detail` says what was going on ("waiting for the response"); `reason` replaces the whole text.
    """

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(reason or detail)
        self.detail = detail
        self.reason = reason


class Violation(Exception):
    """The server broke HTTP/1.1's limits: never retried."""


class Call(dl.Deadline):
    """Per-input state shared with the Retry: the deadline, and the attempts that failed so far."""

    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__(policy.deadline)
        self.policy = policy
        self.failures = 0

    def timeout(self) -> float:
        """The connect/read timeout, shortened so that one wait cannot run past the deadline."""
        return self.clamp(self.policy.timeout)

    def wait(self, seconds: float, last: str | None = None) -> None:
        """Sleep before the next attempt, unless that attempt would start past the deadline."""
        if self.expired():
            raise DeadlineExceeded("waiting for the response")
        if self.ends is not None and time.monotonic() + seconds >= self.ends - dl.MARGIN:
            tail = f"; last: {last}" if last else ""
            raise DeadlineExceeded(reason=f"no time left for another attempt within the {self.seconds:g} s "
                                           f"deadline ({attempts(self)}{tail})")
        if seconds > 0:
            time.sleep(seconds)


def current() -> Call | None:
    call = dl.CURRENT.get()
    return call if isinstance(call, Call) else None


def backoff_delay(factor: float, jitter: float, cap: float, failures: int) -> float:
    """Exponential backoff with jitter after `failures` failed attempts: factor * 2**(n-1) + U(0, jitter)."""
    if failures < 1 or factor <= 0:
        return 0.0
    return min(cap, factor * 2 ** (failures - 1) + random.random() * jitter)


class DiffrunRetry(Retry):
    """urllib3 Retry that caps Retry-After, and inside `fetch` shares its count and deadline."""

    # urllib3 also retries 413 when it carries Retry-After; a 4xx outside RETRY_STATUSES never is.
    RETRY_AFTER_STATUS_CODES = RETRY_STATUSES & Retry.RETRY_AFTER_STATUS_CODES

    def __init__(self, *args: Any, max_retry_after: float = 30.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> DiffrunRetry:
        retry = super().new(**kw)
        retry.max_retry_after = self.max_retry_after
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> DiffrunRetry:
        broken = violation(error)
        if broken is not None:
            raise Violation(broken) from error
        call = current()
        if call is not None:
            call.failures += 1
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def is_exhausted(self) -> bool:
        call = current()
        if call is not None and call.failures > call.policy.retries:
            return True
        return super().is_exhausted()

    def get_backoff_time(self) -> float:
        call = current()
        failures = call.failures if call is not None else len(self.history)
        return backoff_delay(self.backoff_factor, self.backoff_jitter, self.backoff_max, failures)

    def sleep(self, response: Any = None) -> None:
        asked = None
        if response is not None and self.respect_retry_after_header:
            header = response.headers.get("Retry-After")
            try:
                asked = Retry.parse_retry_after(self, header) if header else None
            except uex.InvalidHeader:
                asked = None
        wait = min(asked, self.max_retry_after) if asked else self.get_backoff_time()
        call = current()
        if call is None:
            if wait > 0:
                time.sleep(wait)
            return
        left = call.left()
        if asked and left is not None and wait >= left - dl.MARGIN:
            capped = f" (capped at {self.max_retry_after:g} s)" if asked > self.max_retry_after else ""
            raise DeadlineExceeded(reason=f"{status_text(response.status, response.reason)}: Retry-After "
                                           f"{asked:g} s{capped} is past the {call.seconds:g} s deadline")
        call.wait(wait, last=self._last_failure())

    def _last_failure(self) -> str | None:
        if not self.history:
            return None
        last = self.history[-1]
        if last.status:
            return status_text(last.status, None)
        return cause(last.error) if last.error is not None else None


def make_retry(policy: FetchPolicy) -> Retry:
    """The one place that decides what urllib3 retries, and how long it waits in between."""
    return DiffrunRetry(
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


def status_text(status: int, reason: str | None) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = reason or "error"
    return f"HTTP {status} {phrase}"


def attempts(call: Call) -> str:
    """'1 attempt', or '4 attempts in 5.2 s': how hard it tried, and for how long."""
    n = max(call.failures, 1)
    return "1 attempt" if n == 1 else f"{n} attempts in {call.elapsed():.1f} s"
