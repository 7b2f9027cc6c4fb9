"""A real threaded HTTP/1.1 server on 127.0.0.1 that misbehaves on request.

Routes are registered per test; each can fail its first requests in chosen ways (`faults`) or fail
always (`always`). A fault is an HTTP status (503, 429, ...) or one of:

- "reset":    close the connection with a TCP RST before any response
- "truncate": send the full Content-Length but only half the body, then close
- "break":    send half the body, then reset the connection (fails mid-body)
- "slow":     wait `slow` seconds before answering (longer than the client's read timeout)
- "silent":   read the request, then never answer (until the client or the server goes away)
- "trickle_status", "trickle_headers", "trickle_body": send the response one byte every `trickle`
              seconds, from the status line, the headers or the body on (what comes before, at once)
- "trickle_unsized": as "trickle_body", without Content-Length (the body ends when the connection does)
- "many_headers": answer with 150 headers (http.client accepts at most 100)
- "long_header":  answer with one 70 KB header line (http.client accepts at most 64 KB)

    server.add("/x.png", body=png, content_type="image/png", faults=[503, 503])
    server.add("/limited", body=png, faults=[429], retry_after="3600")
    server.redirect("/a", "/b")
    server.count("/x.png"), server.connections, server.log[-1].headers["User-Agent"]

`server` is a pytest fixture (one server per session, reset for every test); bench scripts use
`LoopbackServer` directly. `LoopbackServer(tls=context)` serves https with that SSL context.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

Fault = int | str
FAULTS = ("reset", "truncate", "break", "slow", "silent", "trickle_status", "trickle_headers", "trickle_body",
          "trickle_unsized", "many_headers", "long_header")


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    always: Fault | None = None
    retry_after: str | None = None
    slow: float = 1.0
    endless: bool = False
    content_length: int | None = None
    """Announce this Content-Length instead of the body's (e.g. a huge one)."""
    trickle: float = 0.3
    """Seconds between bytes for the trickle faults."""


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    connection: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end on their own
    server: _Server

    def setup(self) -> None:
        super().setup()
        # As real servers do for keep-alive: without it, Nagle + delayed ACK add ~40 ms per reused request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.first = True
        self.connection_id = self.server.owner._connected(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        self.server.owner._disconnected(self.connection)

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the client went away, or reset() closed it
            super().handle()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        delay = owner.latency + (owner.connection_delay if self.first else 0.0)
        self.first = False
        if delay:
            time.sleep(delay)
        path = self.path.split("?", 1)[0]
        route, fault = owner._next(path, Request(path, dict(self.headers.items()), self.connection_id))
        if route is None:
            self._send(404, b"not found", "text/plain")
        elif fault == "reset":
            self._reset()
        elif fault == "slow":
            time.sleep(route.slow)
            self._send_route(route)
        elif fault == "silent":
            self._stay_silent()
        elif isinstance(fault, str) and fault.startswith("trickle_"):
            self._trickle(route, fault)
        elif fault in ("many_headers", "long_header"):
            extra = {f"X-Filler-{i}": "x" for i in range(150)} if fault == "many_headers" else {"X-Long": "x" * 70_000}
            self._send(route.status, route.body, route.content_type or "application/octet-stream", extra)
        elif isinstance(fault, int):
            extra = {"Retry-After": route.retry_after} if route.retry_after else {}
            self._send(fault, f"fault {fault}".encode(), "text/plain", extra)
        else:
            self._send_route(route, fault)

    def _send_route(self, route: Route, fault: Fault | None = None) -> None:
        if route.endless:
            self._send_endless(route)
            return
        body = route.body
        length = route.content_length if route.content_length is not None else len(body)
        headers = dict(route.headers)
        if fault in ("truncate", "break"):
            self._head(route.status, route.content_type, length, headers)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "break":
                self._reset()
            else:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_WR)
            return
        self._head(route.status, route.content_type, length, headers)
        self.wfile.write(body[:length])
        if length > len(body):  # an announced length the body does not have: close early
            self.close_connection = True

    def _stay_silent(self) -> None:
        """Answer nothing; return once the client closes (or resets) the connection, or the server stops."""
        self.close_connection = True
        owner = self.server.owner
        while not owner._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if readable and not self.connection.recv(1024):
                return

    def _trickle(self, route: Route, fault: str) -> None:
        """The whole response, one byte every `route.trickle` s from the chosen part on."""
        self.close_connection = True
        head = f"HTTP/1.1 {route.status} OK\r\n".encode()
        length = "" if fault == "trickle_unsized" else f"Content-Length: {len(route.body)}\r\n"
        headers = f"Content-Type: {route.content_type}\r\n{length}Connection: close\r\n\r\n".encode()
        whole = head + headers + route.body
        start = len(head) + len(headers)
        if fault in ("trickle_status", "trickle_headers"):
            start = 0 if fault == "trickle_status" else len(head)
        self.wfile.write(whole[:start])
        owner = self.server.owner
        for i in range(start, len(whole)):
            if owner._stopping.wait(route.trickle):
                return
            self.wfile.write(whole[i:i + 1])

    def _send_endless(self, route: Route) -> None:
        self.send_response(route.status)
        if route.content_type:
            self.send_header("Content-Type", route.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = route.body or b"\0" * 65536
        while not self.server.owner._stopping.is_set():
            self.wfile.write(chunk)

    def _head(self, status: int, content_type: str | None, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._head(status, content_type, len(body), headers or {})
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0) so the client sees a reset, not a clean end."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: LoopbackServer


class LoopbackServer:
    """The server, its routes and its counters. `start()`/`stop()`, or use it as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self._httpd = _Server((host, port), _Handler)
        self.scheme = "http"
        if tls is not None:  # https: the handshake runs as each connection is accepted
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._httpd.owner = self
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        self.routes: dict[str, Route] = {}
        self.log: list[Request] = []
        self.connections = 0
        """New TCP connections accepted since the last reset."""
        self.connection_delay = 0.0
        """Seconds added to the first request of every new connection (imitates a TLS handshake)."""
        self.latency = 0.0
        """Seconds added to every request."""

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str | None = "application/octet-stream",
        headers: dict[str, str] | None = None,
        faults: list[Fault] | tuple[Fault, ...] = (),
        always: Fault | None = None,
        retry_after: str | None = None,
        slow: float = 1.0,
        endless: bool = False,
        gzip: bool = False,
        content_length: int | None = None,
        trickle: float = 0.3,
    ) -> str:
        """Register a route and return its full URL. `gzip=True` sends the body gzip-encoded."""
        for fault in (*faults, always):
            if isinstance(fault, str) and fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}")
        headers = dict(headers or {})
        if gzip:
            body = gzip_module.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        route = Route(body, status, content_type, headers, list(faults), always, retry_after, slow, endless,
                      content_length, trickle)
        with self._lock:
            self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Register a redirect from `path` to `location` (a path or a full URL)."""
        return self.add(path, b"", status=status, content_type=None, headers={"Location": location})

    def count(self, path: str) -> int:
        """Requests received for `path` since the last reset."""
        with self._lock:
            return Counter(r.path for r in self.log)[path]

    def reset(self) -> None:
        """Forget routes, counters and delays, and close every open connection."""
        with self._lock:
            self.routes.clear()
            self.log.clear()
            self.connections = 0
            self.connection_delay = 0.0
            self.latency = 0.0
        self._close_connections()

    def _close_connections(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _connected(self, sock: socket.socket) -> int:
        with self._lock:
            self._open.add(sock)
            self.connections += 1
            return self.connections

    def _disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _next(self, path: str, request: Request) -> tuple[Route | None, Fault | None]:
        """Log the request; return its route and the fault to play this time (None: behave)."""
        with self._lock:
            self.log.append(request)
            route = self.routes.get(path)
            if route is None:
                return None, None
            if route.faults:
                return route, route.faults.pop(0)
            return route, route.always


@pytest.fixture(scope="session")
def loopback_server():
    """One server for the whole test session."""
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def server(loopback_server: LoopbackServer):
    """The session's server, reset (routes, counters, open connections) before and after each test."""
    loopback_server.reset()
    yield loopback_server
    loopback_server.reset()
