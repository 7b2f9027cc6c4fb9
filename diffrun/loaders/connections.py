"""urllib3 connection classes: every connection is watched by its input's deadline; the guarded
ones connect only to the addresses the network guard checked.

- Watched (all fetches): socket timeouts are shortened to the input's time left, and the input
  claims the connection so that the deadline watchdog can shut its socket down (`loaders/deadline.py`).
- Pinned (`--allow-host`, `--block-private`): `_new_conn` connects to `PIN`'s checked addresses
  instead of resolving the name again, which closes the DNS-rebinding gap; it refuses to connect
  to any host or port but the one checked. The URL's host still goes
  into `Host`, TLS SNI and the certificate check, which urllib3 takes from `self.host`.

`install(manager, pinned=...)` puts them into a urllib3 PoolManager (or ProxyManager).
"""

from __future__ import annotations

import contextvars
import socket
import sys
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection as u3connection

from diffrun.loaders import deadline as dl
from diffrun.loaders.guard import Target

PIN: contextvars.ContextVar[Target | None] = contextvars.ContextVar("diffrun_pin", default=None)
"""The hop being fetched in this thread, as the guard checked it (host, port, addresses)."""


class _Watched:
    """Mixin for urllib3's HTTPConnection: claim the connection and clamp its timeouts."""

    sock: Any
    timeout: Any
    watched_sock: Any = None
    diffrun_owner: Any = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        self.watched_sock = sock
        current = dl.CURRENT.get()
        if current is not None:
            current.claim(self)
        return sock

    def connect(self) -> None:
        current = dl.CURRENT.get()
        if current is not None:
            self.timeout = current.clamp(self.timeout)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kw: Any) -> None:
        current = dl.CURRENT.get()
        if current is not None:
            if self.sock is not None:
                self.watched_sock = self.sock
            current.claim(self)
        super().request(*args, **kw)  # type: ignore[misc]

    def getresponse(self) -> Any:
        current = dl.CURRENT.get()
        if current is not None:
            self.timeout = current.clamp(self.timeout)
        return super().getresponse()  # type: ignore[misc]


class _Pinned(_Watched):
    """Mixin: connect to the checked addresses in `PIN`, never to a fresh look-up of the name."""

    host: str
    port: int
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        pin = PIN.get()
        host = self.host.strip("[]").rstrip(".").lower()
        if pin is None or pin.host != host or pin.port != self.port:
            # Fail closed: a guarded connection never resolves a name by itself.
            raise NewConnectionError(self, f"no checked address for {host}:{self.port}; refused")  # type: ignore[arg-type]
        if not pin.addresses:  # only the name was checked (--allow-host alone): resolve it as usual
            return super()._new_conn()
        last: Exception | None = None
        for address in pin.addresses:
            try:
                sock = u3connection.create_connection(
                    (address, self.port), self.timeout,
                    source_address=self.source_address, socket_options=self.socket_options,
                )
            except TimeoutError as err:
                last = ConnectTimeoutError(self, f"connection to {host} ({address}) timed out")
                last.__cause__ = err
                continue
            except OSError as err:
                last = NewConnectionError(self, f"Failed to establish a new connection: {err}")  # type: ignore[arg-type]
                last.__cause__ = err
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            self.watched_sock = sock
            current = dl.CURRENT.get()
            if current is not None:
                current.claim(self)
            return sock
        assert last is not None
        raise last


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = PinnedHTTPSConnection


def install(manager: Any, *, pinned: bool) -> None:
    """Make urllib3 `manager` build its pools from the watched (or pinned) connection classes."""
    if pinned:
        manager.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}
    else:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
