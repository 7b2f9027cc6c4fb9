"""`--save-inputs DIR`: keep the exact bytes of every input, content-addressed, plus inputs.jsonl.

The folder may be shared or prepared by someone else, so nothing found in it is trusted: the log is
opened without following a symbolic link (and must be a regular file), and a file already under an
input's name is used only when it is a regular file holding exactly those bytes; anything else there
(a link, a decoy of the same size) is replaced atomically by the real bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path

from diffrun.loaders.redact import strip_credentials

EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
              "TIFF": "tif", "AVIF": "avif"}
LOG_NAME = "inputs.jsonl"

# One lock for every store in the process: two InputStore objects on the same folder must not
# interleave their log lines either.
_LOG_LOCK = threading.Lock()


class InputStore:
    """Writes each input once as `<sha256>.<ext>` (the full hex digest) and logs one JSON line per input saved."""

    def __init__(self, directory: Path | str, *, fsync: bool = False) -> None:
        self.directory = Path(directory).expanduser()
        self.fsync = fsync
        self.log_path = self.directory / LOG_NAME

    def save(self, data: bytes, *, sha256: str, fmt: str, source_display: str, final_url: str | None,
             width: int, height: int) -> Path:
        """Store `data` (skipped when already there) and append its line to inputs.jsonl."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ext = EXTENSIONS.get(fmt.upper(), "bin")
        path = self.directory / f"{sha256}.{ext}"
        if not _holds(path, data):
            self._write_atomic(path, data)
        record = {
            "source": strip_credentials(source_display),
            "final_url": strip_credentials(final_url) if final_url else None,
            "sha256": sha256,
            "bytes": len(data),
            "format": fmt,
            "width": width,
            "height": height,
            "saved": path.name,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with _LOG_LOCK, _open_log(self.log_path) as log:
            log.write(line.encode("utf-8"))
        return path

    def _write_atomic(self, path: Path, data: bytes) -> None:
        # os.open with 0o666 (not mkstemp's 0o600) so the saved file gets the user's usual umask
        tmp = self.directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted under the name must not block the open


def _open_log(path: Path):
    """inputs.jsonl for appending: never through a symbolic link, and only a regular file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC | _NONBLOCK | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP or (e.errno in (errno.ENXIO, errno.EINVAL) and path.is_symlink()):
            raise OSError(errno.ELOOP, f"{path.name} is a symbolic link; refusing to write through it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    return os.fdopen(fd, "ab")


def _holds(path: Path, data: bytes) -> bool:
    """True when `path` is a regular file (not a link) whose bytes are exactly `data`."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK | getattr(os, "O_BINARY", 0))
    except OSError:  # missing, a symbolic link (ELOOP), unreadable: write it afresh
        return False
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        return f.read(len(data) + 1) == data
