"""Results kept in memory for `response_format=url` (bounded by bytes and age), and video jobs."""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

RESULT_TTL = 3600.0
"""Seconds a `response_format=url` result stays fetchable (then 404); `--keep-results` bounds the bytes."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class ResultStore:
    """id -> (bytes, content type), oldest dropped first beyond `max_bytes` or after `ttl` seconds."""

    def __init__(self, max_bytes: int, ttl: float = RESULT_TTL) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._items: collections.OrderedDict[str, tuple[bytes, str, float]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, item_id: str, data: bytes, content_type: str) -> bool:
        """Keep `data`; False when it alone is larger than the store."""
        if len(data) > self.max_bytes:
            return False
        with self._lock:
            self._expire()
            self._items[item_id] = (data, content_type, time.monotonic() + self.ttl)
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, (old, _, _) = self._items.popitem(last=False)
                self._bytes -= len(old)
        return True

    def get(self, item_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            self._expire()
            found = self._items.get(item_id)
        return None if found is None else (found[0], found[1])

    def delete(self, item_id: str) -> None:
        with self._lock:
            found = self._items.pop(item_id, None)
            if found is not None:
                self._bytes -= len(found[0])

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items:
            key, (data, _, until) = next(iter(self._items.items()))
            if until > now:
                return
            del self._items[key]
            self._bytes -= len(data)

    @property
    def size(self) -> int:
        return self._bytes


@dataclass
class VideoJob:
    """One `/v1/videos` job, shaped as OpenAI's video object."""

    id: str
    prompt: str | None
    size: str
    seconds: str
    model: str
    status: str = "queued"
    progress: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    completed_at: int | None = None
    error: dict[str, Any] | None = None
    diffrun: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "video", "model": self.model, "status": self.status,
                "progress": self.progress, "created_at": self.created_at, "completed_at": self.completed_at,
                "size": self.size, "seconds": self.seconds, "prompt": self.prompt, "error": self.error,
                "diffrun": self.diffrun}
