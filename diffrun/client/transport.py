"""HTTP to a diffrun server over TCP or a Unix socket: one requests Session per server.

`unix:PATH` addresses are served by a small HTTPAdapter whose connections are AF_UNIX sockets
(no new dependency); every request then goes to `http://localhost` + its path on that socket.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from diffrun.errors import UsageError
from diffrun.loaders.redact import strip_credentials

UNIX_BASE = "http://localhost"


class _UnixConnection(HTTPConnection):
    def __init__(self, path: str, **kwargs) -> None:
        super().__init__("localhost", **kwargs)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixPool(HTTPConnectionPool):
    def __init__(self, path: str, **kwargs) -> None:
        super().__init__("localhost", **kwargs)
        self.socket_path = path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.socket_path, timeout=self.timeout.connect_timeout)


class UnixAdapter(HTTPAdapter):
    """Every request through this adapter goes to the Unix socket at `path`."""

    def __init__(self, path: str) -> None:
        super().__init__(max_retries=0)
        self._pool = _UnixPool(path, maxsize=16)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):
        return self._pool

    def request_url(self, request, proxies):
        return request.path_url

    def close(self) -> None:
        self._pool.close()
        super().close()


@dataclass
class Server:
    """Where a server is and how to talk to it: `url` as the user gave it, `base` for requests."""

    url: str
    base: str
    session: requests.Session
    api_key: str | None = None

    @property
    def shown(self) -> str:
        """The address for messages: credentials removed."""
        return strip_credentials(self.url)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": "diffrun-client"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def close(self) -> None:
        self.session.close()


def connect(url: str, api_key: str | None = None) -> Server:
    """A Server for `http(s)://HOST[:PORT][/PREFIX]` or `unix:PATH`; UsageError for anything else.

    The session ignores proxy and netrc settings from the environment (trust_env off): a job's
    bytes and the API key go to the address given, nowhere else."""
    session = requests.Session()
    session.trust_env = False
    if url.startswith("unix:"):
        path = url[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise UsageError(f"--server {url!r}: no socket path after unix:", hint="use unix:/path/to/socket")
        session.mount(UNIX_BASE, UnixAdapter(path))
        return Server(url, UNIX_BASE, session, api_key)
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise UsageError(f"--server: not a URL: {strip_credentials(url)!r} ({e})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--server: not an http(s) URL or unix:PATH: {strip_credentials(url)!r}",
                         hint="e.g. --server http://127.0.0.1:8765 or --server unix:/run/diffrun.sock")
    session.mount("http://", HTTPAdapter(max_retries=0))
    session.mount("https://", HTTPAdapter(max_retries=0))
    return Server(url, url.rstrip("/"), session, api_key)
