"""The ASGI layer around the routes: API key, body cap, one log line and the metrics of every request."""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from diffrun.server.metrics import Metrics
from diffrun.server.responses import simple_error

OPEN_PATHS = {"/health"}
_ID = re.compile(r"^/v1/(images|videos)/[^/]+(/content)?$")


def route_label(method: str, path: str) -> str:
    """The route a path belongs to, ids folded (metrics labels stay few)."""
    match = _ID.match(path)
    if match and not path.endswith(("/generations", "/edits")):
        path = f"/v1/{match.group(1)}/{{id}}{match.group(2) or ''}"
    elif not path.startswith(("/v1/", "/health", "/metrics")):
        path = "other"
    return f"{method} {path}"


PROBES = ("/health", "/metrics")
"""Routes that look at the server without using it: not activity for --keep-alive."""


class Guard:
    """Wraps the app: 401 without the key (but /health), 413 for bodies over `max_body`, a log line each."""

    def __init__(self, app: Any, *, api_key: str | None, max_body: int, metrics: Metrics, json_log: bool = False,
                 log: Callable[[str], None] | None = None, touch: Callable[[], None] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body
        self.metrics = metrics
        self.json_log = json_log
        self.log = log or _stderr
        self.touch = touch or (lambda: None)
        """Called at the start and end of every request but a probe's (--keep-alive counts idle time from the
        last): `diffrun ps`, the --warm client's readiness polls and a scraper of /metrics keep no server alive."""

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        probe = scope.get("path") in PROBES
        if not probe:
            self.touch()
        start = time.perf_counter()
        request_id = secrets.token_hex(6)
        status = [0]

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_json(send_logged, *refusal)
                return
            await self.app(scope, self._capped(receive), send_logged)
        finally:
            if not probe:
                self.touch()
            seconds = time.perf_counter() - start
            label = route_label(scope.get("method", ""), scope.get("path", ""))
            code = status[0] or 499
            self.metrics.observe(label, code, seconds)
            self._log(request_id, label, code, seconds)

    def _refusal(self, scope: dict) -> tuple[int, dict, dict[str, str]] | None:
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return 401, simple_error(401, "missing or wrong API key", "unauthorized"), \
                    {"WWW-Authenticate": "Bearer"}
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, simple_error(400, "bad Content-Length", "bad_request"), {}
            if int(length) > self.max_body:
                return 413, self._too_large(), {"Connection": "close"}
        return None

    def _too_large(self) -> dict:
        return simple_error(413, f"request body: larger than the limit of {self.max_body} bytes",
                            "too_large", exit_code=3)

    def _capped(self, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
        """`receive`, counting body bytes: past the cap the app sees BodyTooLarge (a 413)."""
        seen = [0]

        async def receive_capped() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    from diffrun.server.bodies import BodyTooLarge

                    raise BodyTooLarge(self.max_body)
            return message

        return receive_capped

    def _log(self, request_id: str, label: str, status: int, seconds: float) -> None:
        if self.json_log:
            line = json.dumps({"event": "request", "id": request_id, "route": label, "status": status,
                               "seconds": round(seconds, 4), "time": round(time.time(), 3)})
        else:
            line = f"{request_id} {label} {status} {seconds:.3f}s"
        self.log(line)


async def _send_json(send: Callable, status: int, body: dict, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed stderr never stops the server
        pass
