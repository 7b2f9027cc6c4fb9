"""`--save-inputs DIR`: keep the exact bytes of every input, content-addressed, plus inputs.jsonl."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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
        if not _same_size(path, len(data)):
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
        with _LOG_LOCK, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(line)
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


def _same_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False
