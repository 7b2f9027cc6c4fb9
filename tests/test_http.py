"""diffrun.loaders.http.fetch against the misbehaving loopback server."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from clirun import diffrun

from diffrun import __version__
from diffrun.errors import Exit, InputError
from diffrun.loaders.http import Fetched, fetch, session
from diffrun.loaders.policy import FetchPolicy

FAST = FetchPolicy(timeout=2.0, deadline=20.0, retries=3, backoff=0.001, max_retry_after=0.01)
BODY = os.urandom(50_000)


def fails(url: str, policy: FetchPolicy = FAST) -> InputError:
    with pytest.raises(InputError) as info:
        fetch(url, policy)
    assert info.value.exit == Exit.INPUT
    return info.value


def test_plain_fetch(server):
    url = server.add("/x.png", BODY, content_type="image/png")
    got = fetch(url, FAST)
    assert isinstance(got, Fetched)
    assert got.data == BODY
    assert got.final_url == url
    assert got.content_type == "image/png"
    assert server.count("/x.png") == 1


def test_503s_then_success(server):
    url = server.add("/flaky", BODY, faults=[503, 503])
    assert fetch(url, FAST).data == BODY
    assert server.count("/flaky") == 3


def test_503_forever_gives_up_after_all_attempts(server):
    url = server.add("/down", BODY, always=503)
    err = fails(url)
    assert server.count("/down") == 1 + FAST.retries
    assert "HTTP 503 Service Unavailable" in err.reason
    assert "4 attempts" in err.reason
    assert err.code == "http_status"


def test_retries_zero_means_one_request(server):
    url = server.add("/down", BODY, always=502)
    fails(url, FetchPolicy(retries=0, backoff=0.001))
    assert server.count("/down") == 1


def test_429_retry_after_is_honoured_and_capped(server):
    # Retry-After: 3600 capped at 0.01 s: with a 5 s deadline, finishing at all proves the cap.
    url = server.add("/limited", BODY, faults=[429, 429], retry_after="3600")
    policy = FetchPolicy(timeout=2.0, deadline=5.0, retries=3, backoff=0.001, max_retry_after=0.01)
    assert fetch(url, policy).data == BODY
    assert server.count("/limited") == 3


def test_retry_after_past_the_deadline_fails_fast_without_sleeping(server):
    url = server.add("/limited", BODY, faults=[429], retry_after="3600")
    policy = FetchPolicy(timeout=2.0, deadline=3.0, retries=3, backoff=0.001, max_retry_after=3600)
    err = fails(url, policy)
    assert err.reason == "HTTP 429 Too Many Requests: Retry-After 3600 s is past the 3 s deadline"
    assert err.code == "deadline"
    assert server.count("/limited") == 1


def test_reset_before_response_then_success(server):
    url = server.add("/rst", BODY, faults=["reset", "reset"])
    assert fetch(url, FAST).data == BODY
    assert server.count("/rst") == 3


def test_reset_forever_is_a_connection_failure(server):
    url = server.add("/rst", BODY, always="reset")
    err = fails(url)
    assert server.count("/rst") == 4
    assert err.reason.startswith("connection failed after 4 attempts")
    assert err.code == "connection"


def test_connection_refused(unused_port_url):
    err = fails(unused_port_url, FetchPolicy(retries=1, backoff=0.001))
    assert re.match(r"connection failed after 2 attempts in \d+\.\d s: ", err.reason)  # how long it tried
    assert "refused" in err.reason.lower()
    assert err.code == "connection"


def test_short_body_is_retried(server):
    url = server.add("/short", BODY, faults=["truncate"])
    assert fetch(url, FAST).data == BODY
    assert server.count("/short") == 2


def test_short_body_always_fails_without_partial_bytes(server):
    url = server.add("/short", BODY, always="truncate")
    err = fails(url)
    assert server.count("/short") == 4
    assert f"body ended after {len(BODY) // 2} of {len(BODY)} bytes" in err.reason
    assert err.code == "truncated"


def test_break_mid_body_once_then_success(server):
    url = server.add("/broken", BODY, faults=["break"])
    assert fetch(url, FAST).data == BODY
    assert server.count("/broken") == 2


def test_body_and_connection_failures_share_one_budget(server):
    url = server.add("/mixed", BODY, faults=["truncate", 503, "reset", "truncate"])
    err = fails(url)
    assert server.count("/mixed") == 4
    assert "4 attempts" in err.reason


def test_slow_first_response_times_out_then_succeeds(server):
    url = server.add("/slow", BODY, faults=["slow"], slow=1.0)
    policy = FetchPolicy(timeout=0.3, deadline=10.0, retries=2, backoff=0.001)
    assert fetch(url, policy).data == BODY
    assert server.count("/slow") == 2


def test_always_slow_times_out(server):
    url = server.add("/slow", BODY, always="slow", slow=1.0)
    err = fails(url, FetchPolicy(timeout=0.2, deadline=10.0, retries=1, backoff=0.001))
    assert err.reason.startswith("timed out after 2 attempts in ")
    assert err.code == "timeout"
    assert server.count("/slow") == 2


def test_deadline_exceeded(server):
    url = server.add("/slow", BODY, always="slow", slow=1.0)
    err = fails(url, FetchPolicy(timeout=5.0, deadline=0.4, retries=5, backoff=0.001))
    assert err.reason == "deadline of 0.4 s exceeded waiting for the response"
    assert err.code == "deadline"
    assert server.count("/slow") == 1


def test_endless_body_stops_at_the_byte_cap(server):
    url = server.add("/endless", endless=True)
    err = fails(url, FetchPolicy(max_bytes=1_000_000, retries=3, backoff=0.001))
    assert "larger than the 1.0 MB limit" in err.reason
    assert err.code == "too_large"
    assert err.hint == "raise --max-input-bytes"
    assert server.count("/endless") == 1


def test_content_length_over_the_cap_is_refused_without_reading(server):
    # The body is much shorter than announced: reading it would fail and be retried.
    url = server.add("/huge", b"x" * 1000, content_length=10**12)
    err = fails(url, FetchPolicy(max_bytes=1_000_000, retries=3, backoff=0.001))
    assert err.reason == "larger than the 1.0 MB limit (Content-Length: 1000.0 GB)"
    assert (err.code, err.hint) == ("too_large", "raise --max-input-bytes")
    assert server.count("/huge") == 1


@pytest.mark.parametrize(("status", "phrase"), [(404, "Not Found"), (403, "Forbidden"), (410, "Gone")])
def test_client_errors_are_not_retried(server, status, phrase):
    url = server.add("/nope", b"no", status=status)
    err = fails(url)
    assert err.reason == f"HTTP {status} {phrase}"
    assert err.code == "http_status"
    assert server.count("/nope") == 1


def test_413_with_retry_after_is_not_retried(server):
    # urllib3 on its own retries 413 when it carries Retry-After; only the listed statuses are retried.
    url = server.add("/big", b"no", status=413, headers={"Retry-After": "0"})
    err = fails(url)
    assert err.reason == "HTTP 413 Request Entity Too Large"
    assert server.count("/big") == 1


def test_missing_route_is_404(server):
    err = fails(server.url("/missing.png"))
    assert "HTTP 404 Not Found" in err.reason
    assert err.hint


def test_redirect_chain_is_followed(server):
    server.redirect("/a", "/b", status=301)
    server.redirect("/b", server.url("/c"), status=307)
    server.add("/c", BODY)
    got = fetch(server.url("/a"), FAST)
    assert got.data == BODY
    assert got.final_url == server.url("/c")
    assert [server.count(p) for p in ("/a", "/b", "/c")] == [1, 1, 1]


def test_redirect_loop(server):
    server.redirect("/a", "/b")
    server.redirect("/b", "/a")
    err = fails(server.url("/a"))
    assert err.reason == "redirect loop"
    assert err.code == "redirect"
    assert server.count("/a") == 1


def test_too_many_redirects(server):
    for i in range(10):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    server.add("/r10", BODY)
    err = fails(server.url("/r0"), FetchPolicy(max_redirects=5, backoff=0.001))
    assert err.reason == "too many redirects (more than 5)"
    assert err.code == "redirect"
    assert server.count("/r6") == 0
    assert fetch(server.url("/r0"), FetchPolicy(max_redirects=10)).data == BODY


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_redirect_to_non_http_is_refused(server, target):
    server.redirect("/evil", target)
    err = fails(server.url("/evil"))
    assert err.reason == "redirect to a non-http(s) URL refused"
    assert err.code == "redirect"


def test_redirect_to_an_invalid_url_is_an_input_error(server):
    server.redirect("/bad", "http://[::1/x")  # urljoin raises ValueError on it
    err = fails(server.url("/bad"))
    assert err.reason == "redirect to an invalid URL" and err.code == "redirect"


def test_a_cookie_one_server_sets_never_travels_with_a_later_input(server):
    first = server.add("/set.png", BODY, headers={"Set-Cookie": "sid=secret; Path=/"})
    later = server.add("/later.png", BODY)
    assert fetch(first, FAST).data == BODY
    assert fetch(later, FAST).data == BODY
    assert "Cookie" not in server.log[-1].headers


def test_non_http_url_is_refused():
    err = fails("ftp://127.0.0.1/x.png")
    assert "http" in err.reason
    assert err.code == "invalid_url"


def test_gzip_body_is_decoded(server):
    url = server.add("/z", BODY + b"\0" * 100_000, gzip=True)
    assert fetch(url, FAST).data == BODY + b"\0" * 100_000


def test_gzip_bomb_is_capped_on_the_decoded_size(server):
    bomb = b"\0" * 20_000_000
    url = server.add("/bomb", bomb, gzip=True)
    assert len(server.routes["/bomb"].body) < 100_000
    err = fails(url, FetchPolicy(max_bytes=1_000_000, backoff=0.001))
    assert "larger than the 1.0 MB limit" in err.reason
    assert server.count("/bomb") == 1


def test_bad_gzip_is_an_input_error(server):
    url = server.add("/badz", b"not gzip at all", headers={"Content-Encoding": "gzip"})
    err = fails(url)
    assert "could not decode the gzip body" in err.reason


def test_user_agent_is_sent(server):
    url = server.add("/ua", BODY)
    fetch(url, FAST)
    assert server.log[-1].headers["User-Agent"] == f"diffrun/{__version__}"


def test_one_pooled_connection_is_reused(server):
    urls = [server.add(f"/img{i}.png", BODY) for i in range(10)]
    for url in urls:
        assert fetch(url, FAST).data == BODY
    assert server.connections == 1
    assert {r.connection for r in server.log} == {1}


def test_session_is_shared():
    assert session(FAST) is session(FAST)
    assert session() is session(FetchPolicy())
    assert session() is not session(FAST)


def test_credentials_are_stripped_from_errors(server):
    server.add("/private.png", b"no", status=401)
    url = server.url("/private.png").replace("http://", "http://alice:s3cret@") + "?token=abc123"
    err = fails(url)
    assert "s3cret" not in str(err)
    assert "abc123" not in str(err)
    assert "alice" not in str(err)
    assert "HTTP 401 Unauthorized" in str(err)
    assert server.log[-1].headers.get("Authorization", "").startswith("Basic ")


@pytest.mark.parametrize("url", ["http://alice:s3cret@/x.png", "http://127.0.0.1:99999/x.png?token=s3cret"])
def test_credentials_are_stripped_from_invalid_url_reasons(url):
    err = fails(url)
    assert err.reason.startswith("not a valid URL")
    assert err.code == "invalid_url"
    assert "s3cret" not in str(err)


def test_display_overrides_the_reference(server):
    server.add("/gone", b"", status=404)
    with pytest.raises(InputError) as info:
        fetch(server.url("/gone"), FAST, display="input #3")
    assert str(info.value) == "input #3: HTTP 404 Not Found"


# --- the deadline holds whatever the server does (issue 10, item 7) ---------------------------------

TRICKLE = FetchPolicy(timeout=1.0, deadline=2.0, retries=3, backoff=0.001)
SLACK = 3.0
"""Seconds past the deadline a trickled input may take to end: loose, so that it cannot flake; without
the watchdog these inputs run for a minute or more (one byte every 0.3 s)."""


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("fault", "phase"), [
    ("trickle_status", "waiting for the response"),
    ("trickle_headers", "waiting for the response"),
    ("trickle_body", "reading the body"),
])
def test_deadline_holds_against_a_trickling_server(server, fault, phase):
    url = server.add("/drip", b"x" * 200, always=fault, trickle=0.3)
    start = time.monotonic()
    err = fails(url, TRICKLE)
    assert time.monotonic() - start < TRICKLE.deadline + SLACK
    assert err.code == "deadline"
    assert err.reason.startswith(f"deadline of 2 s exceeded {phase}")


@pytest.mark.timeout(60)
def test_deadline_ends_a_body_without_length_instead_of_returning_part_of_it(server):
    # Without Content-Length the body ends when the connection does: the one the watchdog shut down
    # (here before the first byte of the body, due after 3 s) must not pass for a complete, empty body.
    url = server.add("/drip", b"x" * 200, always="trickle_unsized", trickle=3.0)
    start = time.monotonic()
    err = fails(url, TRICKLE)
    assert time.monotonic() - start < TRICKLE.deadline + SLACK
    assert err.code == "deadline"
    assert "reading the body" in err.reason


@pytest.mark.timeout(60)
def test_silent_server_ends_at_the_deadline_not_after_two_timeouts(server):
    # Each attempt's timeout is cut to the time left: urllib3's own retry no longer waits a whole
    # --timeout again (that took 3.8 s here: two 1.9 s timeouts).
    url = server.add("/mute", always="silent")
    policy = FetchPolicy(timeout=1.9, deadline=2.0, retries=5, backoff=0.001)
    start = time.monotonic()
    err = fails(url, policy)
    assert time.monotonic() - start < policy.deadline + 1.2
    assert err.code == "deadline"


def test_one_watchdog_thread_for_every_fetch(server):
    url = server.add("/x", BODY)
    for _ in range(20):
        assert fetch(url, FAST).data == BODY
    assert [t.name for t in threading.enumerate()].count("diffrun-deadline") == 1


def test_watchdog_leaves_a_connection_another_input_took_over():
    from diffrun.loaders import deadline as dl

    first, second = dl.Deadline(60), dl.Deadline(60)
    a, b = socket.socketpair()
    with a, b:
        conn = SimpleNamespace(sock=a)
        first.claim(conn)
        second.claim(conn)  # back in the pool, then on to another input
        with dl._LOCK:
            first._fire_locked()
        b.sendall(b"ok")
        assert a.recv(2) == b"ok"
        with dl._LOCK:
            second._fire_locked()
        assert a.recv(2) == b""  # shut down: a blocked read returns at once
    first.finish()
    second.finish()


def test_backoff_past_the_deadline_says_what_failed(unused_port_url):
    policy = FetchPolicy(timeout=1.0, deadline=1.0, retries=5, backoff=5.0)
    err = fails(unused_port_url, policy)
    assert err.code == "deadline"
    assert err.reason.startswith("no time left for another attempt within the 1 s deadline (1 attempt; last: ")
    assert "refused" in err.reason.lower()


@pytest.mark.timeout(120)
def test_cli_deadline_against_a_trickling_body(server):
    url = server.add("/drip.png", b"x" * 200, always="trickle_body", trickle=0.3)
    result = diffrun("inspect", url, "--deadline", "2", "--timeout", "1", "--json", timeout=60)
    assert result.returncode == Exit.INPUT
    lines = result.stderr.decode().splitlines()
    assert f"error: {url}: deadline of 2 s exceeded reading the body" in lines[0]
    row = json.loads(result.stdout)  # one row: the input failed at its deadline
    assert row["ok"] is False and row["code"] == "deadline"


# --- HTTP parts of issue 10, item 17 ------------------------------------------------------------------


def test_206_partial_content_is_not_a_success(server):
    url = server.add("/part", BODY[:100], status=206)
    err = fails(url)
    assert err.reason == "HTTP 206 Partial Content: only part of the file was sent"
    assert err.code == "http_status"
    assert server.count("/part") == 1


@pytest.mark.parametrize(("fault", "text"), [
    ("many_headers", "got more than 100 headers"),
    ("long_header", "got more than 65536 bytes when reading header line"),
])
def test_protocol_violations_are_not_retried(server, fault, text):
    url = server.add("/bad", BODY, always=fault)
    err = fails(url)
    assert err.reason == f"protocol error: {text}"
    assert err.code == "protocol"
    assert server.count("/bad") == 1


@pytest.fixture
def unused_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.png"
