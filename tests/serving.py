"""A real `diffrun serve` in a subprocess (tiny model, random port) for the server tests."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from clirun import cli_env


class Served:
    """`diffrun serve ARGS` on port 0: `url` once it listens, `wait_ready()`, `stderr()`, `stop()`."""

    def __init__(self, model: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "diffrun", "serve", "-m", str(model), "--port", "0", "--threads", "1", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or cli_env(OMP_NUM_THREADS="1"))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for(r"listening on ((?:http://|unix:)\S+)")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _wait_for(self, pattern: str, timeout: float = 60) -> str:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found.group(1) if found.groups() else line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the server's stderr: {self.stderr()}")

    def wait_ready(self) -> Served:
        self._wait_for(r"(ready: \w+)")
        return self

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        if self.proc.poll() is None:
            self.proc.kill()
        self._reader.join(5)
        return self.proc.wait()

    def post(self, route: str, **kw) -> requests.Response:
        return requests.post(self.url + route, timeout=kw.pop("timeout", 120), **kw)

    def get(self, route: str, **kw) -> requests.Response:
        return requests.get(self.url + route, timeout=kw.pop("timeout", 60), **kw)


def env_without_diffrun() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
