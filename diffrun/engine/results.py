"""The results log: append-only JSON Lines, one line per job as it ends, each line flushed and fsync'd.

Reading tolerates what a killed writer leaves behind (a truncated last line, stray garbage): such
lines are ignored, and the next append starts on a fresh line. The state of a job is its last line
whose status is not `skipped` (a `skipped` line only says a later run found the job already settled).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (OK, FAILED, SKIPPED)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record of the log, in order; a missing file is an empty log."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line cut short by a kill, or not ours
        if isinstance(record, dict) and isinstance(record.get("id"), str) and record.get("status") in STATUSES:
            records.append(record)
    return records


def settled(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Job id -> its last `ok` or `failed` record (later lines win)."""
    state: dict[str, dict[str, Any]] = {}
    for record in records:
        if record["status"] != SKIPPED:
            state[record["id"]] = record
    return state


def is_done(record: dict[str, Any] | None) -> bool:
    """Recorded ok and every recorded output still on disk."""
    if not record or record.get("status") != OK:
        return False
    outputs = record.get("outputs") or []
    return bool(outputs) and all(isinstance(p, str) and os.path.exists(p) for p in outputs)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ResultsLog:
    """Appends one JSON line per call, durably; safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = None
        self.lines_written = 0

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "ab")  # noqa: SIM115 - held open for the whole run, closed in close()
        if f.tell() > 0:
            with open(self.path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":  # the last run was killed mid-line: start a fresh one
                    f.write(b"\n")
        return f

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self._file = self._open()
            self._file.write(line.encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
            self.lines_written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
