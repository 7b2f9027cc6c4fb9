"""`--warm`: find this user's warm server for a model and runtime, or start one, and wait until it is ready.

The server is `diffrun serve --uds` started detached (a launcher forks, starts a new session, runs the
server and records its pid and exit status), so it outlives the one-liner that started it, is never
its child (a Ctrl-C that ends the client's children leaves it alone) and exits by itself after
`--keep-alive` seconds of idleness. Private addresses are allowed there: only this user can reach the
socket, and every request carries the client's own guard settings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffrun
from diffrun.client import registry
from diffrun.client.remote import RemoteError, health
from diffrun.client.transport import Server, connect
from diffrun.errors import Exit, ServerUnavailable

HUNG_AFTER = 5.0
"""Seconds an existing server's /health may take before the server counts as hung."""
SPAWN_LIMITS = ["--max-input-bytes", "4GiB", "--max-pixels", str(2**32), "--timeout", "10000000",
                "--deadline", "0", "--retries", "10"]
"""The warm server's own loader limits are the widest: each request's input_options tighten them to the client's."""

_LAUNCHER = """
import os, subprocess, sys
pidfile, exitfile, *cmd = sys.argv[1:]
if os.fork():
    os._exit(0)
os.setsid()
proc = subprocess.Popen(cmd)
def put(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
put(pidfile, str(proc.pid))
put(exitfile, str(proc.wait()))
"""

_HOME = str(Path(diffrun.__file__).resolve().parents[1])
"""The folder this diffrun is imported from: first on the server's PYTHONPATH, so it runs this very diffrun
(not whichever one PATH would find), as `python -m diffrun serve ...`, which `pgrep -af 'diffrun serve'` finds."""

Say = Callable[[str], None]


def serve_command(runtime: Any, paths: registry.Paths, keep_alive: float) -> list[str]:
    """`diffrun serve ...` for this runtime on the key's socket."""
    command = [sys.executable, "-m", "diffrun", "serve", "-m", runtime.model, "--uds", str(paths.socket),
               "--ready-file", str(paths.ready), "--keep-alive", f"{keep_alive:g}", "--allow-private",
               "--device", runtime.device, "--dtype", runtime.dtype, "--offload", runtime.offload, *SPAWN_LIMITS]
    for flag, value in (("--revision", runtime.revision), ("--variant", runtime.variant),
                        ("--scheduler", runtime.scheduler), ("--threads", runtime.threads)):
        if value is not None:
            command += [flag, str(value)]
    for flag, on in (("--vae-tiling", runtime.vae_tiling), ("--vae-slicing", runtime.vae_slicing),
                     ("--attention-slicing", runtime.attention_slicing), ("--compile", runtime.compile)):
        if on:
            command.append(flag)
    for ref, scale in registry.warm_settings(runtime)["loras"]:
        command += ["--lora", f"{ref}:{scale:g}"]
    return command


def _spawn(runtime: Any, paths: registry.Paths, keep_alive: float) -> registry.Record:
    """Start the server detached; its record once the launcher has said its pid."""
    paths.clean()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIFFRUN_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_HOME, env.get("PYTHONPATH")) if p)
    fd = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(paths.pidfile), str(paths.exitfile),
             *serve_command(runtime, paths, keep_alive)],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd="/", env=env, close_fds=True)
    finally:
        os.close(fd)
    launcher.wait()
    until = time.monotonic() + 10.0
    while True:
        with contextlib.suppress(OSError, ValueError):
            pid = int(paths.pidfile.read_text())
            break
        if time.monotonic() >= until:
            raise ServerUnavailable(f"warm server for {runtime.model}: the launcher did not start it",
                                    hint=f"see {paths.log}", code="server_unavailable")
        time.sleep(0.01)
    record = registry.Record(key=paths.key, pid=pid, start_time=registry.process_start(pid), model=runtime.model,
                             runtime=registry.warm_settings(runtime), socket=str(paths.socket), log=str(paths.log),
                             created=time.time(), keep_alive=keep_alive)
    registry.write_json(paths.record, record.to_json())
    return record


def _probe(server: Server) -> str:
    """ok | loading | draining | hung | absent (not listening yet)."""
    try:
        status, body = health(server, HUNG_AFTER)
    except ServerUnavailable as exc:
        return "hung" if "timed out" in exc.message else "absent"
    state = str(body.get("status") or "")
    if status == 200:
        return "ok"
    return "draining" if state == "draining" else "loading"


def find_or_start(runtime: Any, *, keep_alive: float, say: Say) -> tuple[Server, registry.Record, registry.Paths]:
    """The warm server for `runtime` (maybe still loading), started if there is none; under the key's lock,
    so two one-liners started at once start one server."""
    folder = registry.runtime_dir()
    paths = registry.Paths(folder, registry.warm_key(runtime))
    paths.check_length()
    with registry.locked(paths.lock):
        record = registry.read_record(paths.record)
        if record is not None and registry.alive(record):
            server = connect(f"unix:{paths.socket}")
            state = _probe(server) if paths.socket.exists() else "absent"
            if state == "hung":
                registry.signal_server(record, signal.SIGKILL)
                registry.wait_gone(record, 5.0)
                registry.reaped(paths)
                say(f"warm server for {record.model} (pid {record.pid}) did not answer; stopped it, starting a new one")
                record = None
            elif state == "draining":
                registry.wait_gone(record, 60.0)
                registry.reaped(paths)
                record = None
            else:
                return server, record, paths
        elif record is not None:
            status = registry.exit_status(paths)
            if status != 0:
                how = ("exited" if status is None else f"was killed (signal {-status})" if status < 0
                       else f"exited with status {status}")
                say(f"warm server for {record.model} (pid {record.pid}) {how}; starting a new one")
            record = None
        record = _spawn(runtime, paths, keep_alive)
        return connect(f"unix:{paths.socket}"), record, paths


def wait_ready(server: Server, record: registry.Record, paths: registry.Paths, timeout: float,
               on_status: Callable[[str], None], check: Callable[[], None]) -> dict[str, Any]:
    """Poll until the server answers /health 200; its body. A server that exits while loading is its own
    error (exit 4 and its message for a model that cannot load); not ready in `timeout` s is exit 69."""
    until = time.monotonic() + timeout
    while True:
        check()
        if paths.socket.exists():
            try:
                status, body = health(server, HUNG_AFTER)
            except ServerUnavailable:
                status, body = 0, {}
            if status == 200 and body.get("status", "ok") == "ok":
                return body
            on_status(str(body.get("progress") or "loading model"))
        else:
            on_status("starting warm server")
        if not registry.alive(record):
            raise _load_failure(record, paths)
        if time.monotonic() >= until:
            raise ServerUnavailable(f"warm server for {record.model}: not ready within {timeout:g} s",
                                    hint=f"raise --server-timeout; its log: {paths.log}", code="server_not_ready")
        time.sleep(0.25)


def _load_failure(record: registry.Record, paths: registry.Paths) -> Exception:
    """The error of a spawned server that exited before it was ready: its own last `error:` line and exit status."""
    time.sleep(0.05)  # the launcher writes the status right after the server exits
    status = registry.exit_status(paths)
    message, hint = _last_error(paths)
    paths.clean()
    if message is None:
        what = "exited" if status is None else f"exited with status {status}"
        return ServerUnavailable(f"warm server for {record.model} {what} before it was ready",
                                 hint=f"see its log: {paths.log}", code="server_unavailable")
    code = status if status is not None and status not in (0, int(Exit.INTERRUPTED)) else int(Exit.MODEL)
    return RemoteError(message, exit=code, code="model" if code == int(Exit.MODEL) else "server_error", hint=hint)


def _last_error(paths: registry.Paths) -> tuple[str | None, str | None]:
    try:
        with open(paths.log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None, None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("error: "):
            after = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return lines[i][7:].strip(), after[5:].strip() if after.startswith("hint:") else None
    return None, None
