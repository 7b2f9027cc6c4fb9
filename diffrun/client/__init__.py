"""`--server` and `--warm`: send Jobs to a diffrun server instead of loading a model in this process.

Imports requests and Pillow, never torch, diffusers or FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_KEEP_ALIVE = 300.0
"""Seconds a warm server stays after its last request (like ollama's keep_alive)."""


@dataclass
class RemoteOptions:
    """Where jobs go: a server URL, or a warm server for the runtime."""

    server: str | None = None
    api_key: str | None = None
    server_timeout: float = 600.0
    warm: bool = False
    keep_alive: float = DEFAULT_KEEP_ALIVE
