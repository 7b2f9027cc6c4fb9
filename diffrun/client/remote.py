"""Talking to a diffrun server: readiness (`/health`), one streamed request, errors mapped back to exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from diffrun.client.transport import Server
from diffrun.errors import DiffrunError, Exit, ServerUnavailable

HEALTH_TIMEOUT = 10.0
"""Seconds one /health call may take before the server counts as not answering."""
MAX_LINE = 1 << 31
"""Largest NDJSON line accepted from a server (a response with its images, base64)."""
_EXITS = {int(code) for code in Exit} - {int(Exit.OK)}
"""Exit codes a server's error may carry: an error is never exit 0, whatever a server says."""

Progress = Callable[[dict[str, Any]], None]


class RemoteError(DiffrunError):
    """An error the server answered with: its one-line message, code and the exit code the CLI uses."""

    def __init__(self, message: str, *, exit: int, code: str, hint: str | None = None,
                 category: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.exit = Exit(exit) if exit in _EXITS else Exit.INTERNAL  # type: ignore[assignment]
        self.category = category or code


def unreachable(server: Server, exc: BaseException) -> ServerUnavailable:
    reason = type(exc).__name__
    if isinstance(exc, requests.exceptions.Timeout):
        reason = "timed out"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else exc
        text = str(getattr(inner, "reason", inner))
        reason = ("connection refused" if "refused" in text.lower() else
                  "no such socket" if "No such file" in text else "cannot connect")
    return ServerUnavailable(f"server {server.shown}: {reason}",
                             hint="start one with `diffrun serve -m MODEL`, or use --warm", code="server_unavailable")


def health(server: Server, timeout: float = HEALTH_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of GET /health; ServerUnavailable when it cannot be reached."""
    try:
        response = server.session.get(server.base + "/health", headers=server.headers(), timeout=timeout)
    except requests.exceptions.RequestException as exc:
        raise unreachable(server, exc) from None
    try:
        body = response.json() if len(response.content) < (1 << 20) else {}
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def wait_ready(server: Server, timeout: float, on_status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll /health until it answers 200 (the model is loaded); its body.

    ServerUnavailable when it cannot be reached (at once) or is not ready within `timeout` seconds."""
    until = time.monotonic() + timeout
    while True:
        status, body = health(server, min(HEALTH_TIMEOUT, max(timeout, 1.0)))
        if status == 200 and body.get("status", "ok") == "ok":
            return body
        state = str(body.get("status") or status)
        if status not in (503,) and state != "loading":
            raise ServerUnavailable(f"server {server.shown}: /health answered {status} ({state[:80]})",
                                    hint="is this a diffrun server?", code="server_unavailable")
        if on_status is not None:
            on_status(str(body.get("progress") or state))
        if time.monotonic() >= until:
            raise ServerUnavailable(f"server {server.shown}: not ready within {timeout:g} s ({state[:80]})",
                                    hint="raise --server-timeout for a model that takes longer to load",
                                    code="server_not_ready")
        time.sleep(0.2)


def error_from(status: int, body: Any, server: Server) -> DiffrunError:
    """The DiffrunError for an error answer: the server's message and exit code, else one by status."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        exit_code = error.get("exit")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int):
            exit_code = _exit_for(status)
        code = error.get("code") if isinstance(error.get("code"), str) else "server_error"
        hint = error.get("hint") if isinstance(error.get("hint"), str) else None
        if status == 401:
            hint = "pass the server's key with --api-key KEY or DIFFRUN_API_KEY"
        return RemoteError(error["message"].split("\n")[0], exit=exit_code, code=code[:64], hint=hint)
    if status in (429, 502, 503, 504):
        return ServerUnavailable(f"server {server.shown}: busy or stopping (HTTP {status})",
                                 hint="try again in a moment", code="server_unavailable")
    return RemoteError(f"server {server.shown}: HTTP {status} without an error body", exit=_exit_for(status),
                       code="server_error")


def _exit_for(status: int) -> int:
    if status in (400, 401, 403, 404, 405, 413, 422):
        return int(Exit.USAGE)
    if status in (429, 502, 503, 504):
        return int(Exit.UNAVAILABLE)
    return int(Exit.INTERNAL)


def post(server: Server, path: str, body: dict[str, Any], on_event: Progress | None = None) -> dict[str, Any]:
    """POST `body` as JSON and stream the progress events; the response JSON (the `done` event's).

    The connection stays open for the whole job; closing it (Ctrl-C raises KeyboardInterrupt here,
    and the `with` closes the socket) is how the server learns to cancel the job."""
    headers = server.headers({"Accept": "application/x-ndjson", "Content-Type": "application/json"})
    data = json.dumps(body, ensure_ascii=False).encode()
    try:
        response = server.session.post(server.base + path, data=data, headers=headers, stream=True,
                                       timeout=(HEALTH_TIMEOUT, None))
    except requests.exceptions.RequestException as exc:
        raise unreachable(server, exc) from None
    with response:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/x-ndjson" and response.status_code == 200:
                return _read_stream(response, server, on_event)
            payload = _json(response.content)
        except requests.exceptions.RequestException as exc:
            raise ServerUnavailable(f"server {server.shown}: connection lost during the job ({type(exc).__name__})",
                                    code="server_unavailable") from None
    if response.status_code != 200:
        raise error_from(response.status_code, payload, server)
    if not isinstance(payload, dict):
        raise bad_answer(server, "not a JSON object")
    return payload


def _read_stream(response: requests.Response, server: Server, on_event: Progress | None) -> dict[str, Any]:
    for line in response.iter_lines(chunk_size=1 << 16):
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            raise bad_answer(server, "an event line is too long")
        event = _json(line)
        if not isinstance(event, dict):
            raise bad_answer(server, "an event is not a JSON object")
        name = event.get("event")
        if name == "done":
            result = event.get("response")
            if not isinstance(result, dict):
                raise bad_answer(server, "done without a response object")
            return result
        if name == "error":
            status = event.get("status") if isinstance(event.get("status"), int) else 500
            raise error_from(status, {"error": event.get("error")}, server)
        if on_event is not None:
            on_event(event)
    raise ServerUnavailable(f"server {server.shown}: the connection closed before the job finished",
                            hint="the server may have stopped; see its log", code="server_unavailable")


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def bad_answer(server: Server, why: str) -> RemoteError:
    """A server answer that does not have the shape diffrun's server gives (exit 70)."""
    return RemoteError(f"server {server.shown}: unexpected answer: {why}", exit=int(Exit.INTERNAL),
                       code="bad_server_answer")
