"""Running `diffrun serve`: bind, load the model behind a listening socket, serve, drain on a signal.

One signal scheme is in force: engine/signals.py's `StopRequested` (uvicorn's own handlers are turned
off). The first SIGTERM/Ctrl-C drains (stop listening, finish the queue within --drain-timeout, 503
for the rest, exit 0); a second one ends the process at once with 130.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from diffrun.errors import DiffrunError, Exit, ModelError, UsageError
from diffrun.loaders.policy import FetchPolicy
from diffrun.pipelines import ModelOptions

DEFAULT_PORT = 8765
DRAIN_MESSAGE = b"\ndraining: finishing queued requests (Ctrl-C again to quit now)\n"


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    uds: Path | None = None
    api_key: str | None = None
    insecure: bool = False
    max_queue: int = 64
    max_batch: int = 4
    drain_timeout: float = 30.0
    keep_alive: float = 0.0
    ready_file: Path | None = None
    json_log: bool = False
    keep_results: int = 256 << 20
    save_inputs: Path | None = None
    max_images: int = 1000
    debug: bool = False


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(options: ServeOptions) -> None:
    """A server others can reach fetches URLs and spends the GPU for them: refuse that without a key."""
    if options.uds is None and not is_loopback(options.host) and not options.api_key and not options.insecure:
        raise UsageError(f"--host {options.host}: other machines could reach this server, and it has no API key",
                         hint="set --api-key (or DIFFRUN_API_KEY), or pass --insecure if you mean it")


def log(line: str, json_log: bool, **fields: object) -> None:
    text = json.dumps({"event": "server", "message": line, **fields}) if json_log else line
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _bind(options: ServeOptions) -> tuple[socket.socket, str]:
    if options.uds is not None:
        path = options.uds.expanduser()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                probe = socket.socket(socket.AF_UNIX)
                try:
                    probe.connect(str(path))
                except OSError:
                    path.unlink()  # a stale socket of a server that is gone
                else:
                    raise UsageError(f"--uds {path}: another server is listening there")
                finally:
                    probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is 0600 from its first moment
        try:
            sock.bind(str(path))
        except OSError as exc:
            raise UsageError(f"--uds {path}: cannot listen: {exc.strerror or exc}") from None
        finally:
            os.umask(old)
        return sock, f"unix:{path}"
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # Made by hand, not socket.create_server: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket's protocol is IPPROTO_TCP (create_server leaves it 0), and without it every answer on
    # a kept-alive connection waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.host.strip("[]"), options.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--host {options.host} --port {options.port}: cannot listen: {exc.strerror or exc}",
                         hint="pick another --port (0: any free one)") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{port}"


def _write_ready(path: Path, url: str) -> None:
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}), encoding="utf-8")
    os.replace(tmp, path)


def serve(runtime: ModelOptions, policy: FetchPolicy, options: ServeOptions) -> int:
    """Serve until stopped; the exit code (0 after a drain, 4 when the model cannot load)."""
    try:
        import uvicorn
        from starlette.formparsers import MultiPartParser

        from diffrun.server.app import ServerState, create_app
        from diffrun.server.middleware import Guard
        from diffrun.server.results import ResultStore
        from diffrun.server.scheduler import Scheduler
    except ImportError as exc:
        raise UsageError(f"diffrun serve needs FastAPI and uvicorn ({exc.name} is missing)",
                         hint="pip install 'diffrun[serve]'") from None
    from diffrun.engine.signals import StopRequested
    from diffrun.pipelines.reference import check_model_ref

    check_exposure(options)
    check_model_ref(runtime.model, runtime.revision)
    MultiPartParser.spool_max_size = policy.max_bytes + 4096  # uploads stay in memory up to the input cap
    scheduler = Scheduler(runtime, max_queue=options.max_queue, max_batch=options.max_batch,
                          save_dir=options.save_inputs)
    state = ServerState(scheduler=scheduler, policy=policy, model_ref=runtime.model,
                        results=ResultStore(options.keep_results), uds=options.uds is not None,
                        keep_alive=options.keep_alive, max_images=options.max_images,
                        debug=options.debug)
    max_body = 4 * policy.max_bytes + (1 << 20)  # a few inputs as base64 or uploads, and the fields
    app = Guard(create_app(state), api_key=options.api_key, max_body=max_body, metrics=state.metrics,
                json_log=options.json_log, touch=scheduler.touch)
    sock, url = _bind(options)
    state.base_url = url if url.startswith("http") else ""
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=int(options.drain_timeout) + 5, timeout_keep_alive=5)
    server = _Server(config)
    outcome: dict[str, int] = {"code": 0}
    with StopRequested(DRAIN_MESSAGE) as stop:
        scheduler.start()
        log(f"listening on {url} (loading {runtime.model})", options.json_log, url=url)
        control = threading.Thread(target=_control, args=(server, scheduler, stop, options, url, outcome),
                                   name="diffrun-serve-control", daemon=True)
        control.start()
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            if options.uds is not None:
                with contextlib.suppress(OSError):
                    options.uds.expanduser().unlink()
    error = outcome.get("error")
    if isinstance(error, DiffrunError):
        raise error
    return outcome["code"]


class _Server:
    """uvicorn.Server without its signal handlers (StopRequested is the one scheme in force)."""

    def __new__(cls, config):  # a subclass made on first use: uvicorn is imported only when serving
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Server(config)


def _control(server, scheduler, stop, options: ServeOptions, url: str, outcome: dict) -> None:
    """Start-up (ready file, or exit 4 when the model cannot load), then keep-alive and the drain."""
    while not scheduler.loaded.wait(0.1):
        if stop.requested:
            break
    if scheduler.load_error is not None:
        exc = scheduler.load_error
        outcome["error"] = exc if isinstance(exc, DiffrunError) else ModelError(
            f"{runtime_name(scheduler)}: cannot load the model: {type(exc).__name__}: {exc}")
        outcome["code"] = int(Exit.MODEL)
        scheduler.stop("the model could not be loaded")
        server.should_exit = True
        return
    if scheduler.model is not None and not stop.requested:
        if options.ready_file is not None:
            try:
                _write_ready(options.ready_file, url)
            except OSError as exc:
                log(f"warning: --ready-file {options.ready_file}: {exc.strerror or exc}", options.json_log)
        log(f"ready: {type(scheduler.model.pipe).__name__} on {scheduler.model.device}", options.json_log,
            url=url, pid=os.getpid())
    while not stop.requested:
        if options.keep_alive > 0 and scheduler.queued == 0 and scheduler.in_flight == 0 \
                and time.monotonic() - scheduler.last_activity > options.keep_alive:
            log(f"idle for {options.keep_alive:g} s: stopping (--keep-alive)", options.json_log)
            break
        time.sleep(0.1)
    scheduler.draining = True
    server.should_exit = True  # the listener closes; requests already read get 503 from the scheduler
    scheduler.drain(options.drain_timeout)
    log("stopped", options.json_log)


def runtime_name(scheduler) -> str:
    return str(scheduler.runtime.model)
