"""The per-user registry of warm servers: a 0700 folder, one set of files per warm key, process identity.

For warm key K the folder holds `K.sock` (the server's Unix socket), `K.json` (the record: pid and
process start time, model, runtime), `K.lock` (taken while one client finds or starts the server),
`K.log` (the server's stderr), `K.ready` (written by the server once it listens), and `K.pid` /
`K.exit` (written by the launcher: the server's pid, then its exit status).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffrun import __version__
from diffrun.errors import UsageError

SOCKET_PATH_MAX = 107
"""A Unix socket path holds at most 107 bytes (108 with its NUL) on Linux."""


def runtime_dir() -> Path:
    """`$XDG_RUNTIME_DIR/diffrun`, else `<cache>/diffrun/run`; created 0700, refused if another user owns it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isabs(base) and os.path.isdir(base):
        folder = Path(base) / "diffrun"
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        root = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
        folder = root / "diffrun" / "run"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UsageError(f"warm-server folder {folder} is not a folder of this user",
                         hint="remove it, or set XDG_RUNTIME_DIR")
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def warm_settings(runtime: Any) -> dict[str, Any]:
    """Every setting that changes a warm server's outputs or memory (nothing per job): the warm key's input.

    Local LoRA files are resolved (a relative path means another file elsewhere); unset threads take
    OMP_NUM_THREADS as a cold run would; CUDA_VISIBLE_DEVICES picks the device."""
    settings = asdict(runtime)
    settings["loras"] = [[_resolved(ref), float(scale)] for ref, scale in runtime.loras]
    if settings.get("threads") is None:
        settings["threads_env"] = os.environ.get("OMP_NUM_THREADS")
    settings["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    settings["diffrun_version"] = __version__
    return settings


def _resolved(ref: str) -> str:
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def warm_key(runtime: Any) -> str:
    """A short hash of `warm_settings`: socket names stay well under the 107-byte limit."""
    text = json.dumps(warm_settings(runtime), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Paths:
    folder: Path
    key: str

    def _file(self, suffix: str) -> Path:
        return self.folder / f"{self.key}{suffix}"

    @property
    def socket(self) -> Path:
        return self._file(".sock")

    @property
    def record(self) -> Path:
        return self._file(".json")

    @property
    def lock(self) -> Path:
        return self._file(".lock")

    @property
    def log(self) -> Path:
        return self._file(".log")

    @property
    def ready(self) -> Path:
        return self._file(".ready")

    @property
    def pidfile(self) -> Path:
        return self._file(".pid")

    @property
    def exitfile(self) -> Path:
        return self._file(".exit")

    def check_length(self) -> None:
        if len(os.fsencode(str(self.socket))) > SOCKET_PATH_MAX:
            raise UsageError(f"warm-server socket path is too long for a Unix socket: {self.socket}",
                             hint="set XDG_RUNTIME_DIR to a short folder")

    def clean(self, *, keep_log: bool = True) -> None:
        """Remove the server's files (the log stays unless asked: it says why a server failed)."""
        for path in (self.socket, self.record, self.ready, self.pidfile, self.exitfile,
                     *(() if keep_log else (self.log,))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@dataclass
class Record:
    key: str
    pid: int
    start_time: str | None
    model: str
    runtime: dict[str, Any]
    socket: str
    log: str
    created: float
    keep_alive: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_record(path: Path) -> Record | None:
    """The record at `path`, or None when missing or not one (written by a stranger, cut short)."""
    try:
        if path.stat().st_size > (1 << 20):
            return None
        data = json.loads(path.read_text())
        record = Record(**{name: data[name] for name in Record.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record.pid, int) or isinstance(record.pid, bool) or record.pid <= 1:
        return None
    return record


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically, mode 0600."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(temp, path)


def records(folder: Path) -> list[tuple[Paths, Record]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        record = read_record(path)
        if record is not None and record.key == path.stem:
            found.append((Paths(folder, path.stem), record))
    return found


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if it is gone.

    Where /proc is missing, "alive" when the pid exists (a reused pid cannot be told apart there)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return None
        return "?"
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] == "Z":  # a zombie has exited
        return None
    return fields[19]


def alive(record: Record) -> bool:
    """The recorded process is still running, and it is the same process (not a reused pid)."""
    started = process_start(record.pid)
    return started is not None and (record.start_time is None or started == record.start_time)


def rss_bytes(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def signal_server(record: Record, signum: int) -> bool:
    """Send `signum` to the recorded server if it is still the recorded process; False if it is gone."""
    if not alive(record):
        return False
    try:
        os.kill(record.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_gone(record: Record, seconds: float) -> bool:
    until = time.monotonic() + seconds
    while alive(record):
        if time.monotonic() >= until:
            return False
        time.sleep(0.05)
    return True


def stop(record: Record, paths: Paths, wait: float) -> str:
    """SIGTERM (the server drains and exits), then SIGKILL after `wait` seconds; the files cleaned.
    Returns "stopped", "killed" or "gone"."""
    if not signal_server(record, signal.SIGTERM):
        paths.clean()
        return "gone"
    outcome = "stopped"
    if not wait_gone(record, wait):
        signal_server(record, signal.SIGKILL)
        wait_gone(record, 5.0)
        outcome = "killed"
    reaped(paths)
    paths.clean()
    return outcome


def reaped(paths: Paths, seconds: float = 1.0) -> None:
    """Wait (briefly) for the launcher to record a stopped server's exit status, so that no late write
    of it lands beside the next server's files."""
    until = time.monotonic() + seconds
    while not paths.exitfile.exists() and time.monotonic() < until:
        time.sleep(0.02)


def exit_status(paths: Paths) -> int | None:
    """The spawned server's exit status, once the launcher has written it."""
    with contextlib.suppress(OSError, ValueError):
        return int(paths.exitfile.read_text().strip()[:8])
    return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created 0600): one client at a time finds or starts a key's server."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
