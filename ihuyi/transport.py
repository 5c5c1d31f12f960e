"""The HTTP transport of the ihuyi client: pooled sessions whose calls end at a total deadline.

Socket timeouts bound the connect and each read, not a call: a server that drips
one byte a second holds the call, and the worker thread making it, for as long as it drips.
Sessions from ``new_session`` take their connections from urllib3 pools that register each
one, while the thread is inside ``within(deadline)``, with the process's watchdog, which
shuts the socket down when the deadline passes: any send or read blocked on it ends at
once. A connection cut that way is closed, never pooled again.

Not covered: name resolution (``getaddrinfo`` cannot be interrupted) and the TCP connect
itself (there is no socket to reach yet): callers give it a connect timeout no longer than
the time left, which urllib3 applies to each address a name resolves to. The TLS handshake
is covered: the watch takes the socket as soon as it is connected.
"""
from __future__ import annotations

import functools
import os
import socket
import threading
import urllib.request
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

import certifi
from urllib3 import BaseHTTPResponse, PoolManager, ProxyManager, Timeout
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError

from ihuyi.watchdog import WATCHDOG, Watch

_local = threading.local()


class Call:
    """The deadline of one call and the watches of the connections it took."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.watches: list[Watch] = []

    @property
    def cut(self) -> bool:
        """Whether the watchdog cut one of this call's connections at the deadline."""
        return any(watch.fired for watch in self.watches)

    def arm(self, sock: socket.socket | None) -> Watch:
        """A watch with this call's deadline on ``sock`` (None: attached once connected)."""
        watch = WATCHDOG.arm(self.deadline, sock)
        self.watches.append(watch)
        return watch


@contextmanager
def within(deadline: float) -> Iterator[Call]:
    """Cut this thread's requests through ``new_session`` sessions at ``deadline`` (monotonic)."""
    call = Call(deadline)
    _local.call = call
    try:
        yield call
    finally:
        _local.call = None
        for watch in call.watches:
            WATCHDOG.disarm(watch)


class _WatchedConnection:
    """A urllib3 connection that puts a socket it connects under its watch."""

    watch: Watch | None = None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        if self.watch is not None and not WATCHDOG.attach(self.watch, sock):
            sock.close()
            raise ConnectTimeoutError(self, "Connected after the call's deadline")
        return sock


class _WatchedPool:
    """A urllib3 pool that hands out connections watched with the thread's call deadline."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        call: Call | None = getattr(_local, "call", None)
        conn.watch = None if call is None else call.arm(conn.sock)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and conn.watch is not None:
            WATCHDOG.disarm(conn.watch)  # idle in the pool, it is no call's to cut
            if conn.watch.fired:
                conn.close()
        super()._put_conn(conn)  # type: ignore[misc]


@functools.cache
def _watched(pool_cls: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """``pool_cls`` (plain, proxied or SOCKS) with its connections watched."""
    if issubclass(pool_cls, _WatchedPool):
        return pool_cls
    connection_cls = type(f"Watched{pool_cls.ConnectionCls.__name__}", (_WatchedConnection, pool_cls.ConnectionCls), {})
    return type(f"Watched{pool_cls.__name__}", (_WatchedPool, pool_cls), {"ConnectionCls": connection_cls})


def _watch_pools(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {
        scheme: _watched(pool_cls) for scheme, pool_cls in manager.pool_classes_by_scheme.items()
    }
    return manager


class Session:
    """The ihuyi client's HTTP: urllib3 pools whose connections honour ``within``, up to 100 per
    host, that never retry and never follow a redirect (a retried Submit may call someone twice:
    retrying is the caller's decision).

    What requests would read from the environment is read once per host: the proxy
    (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``) and the CA bundle (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``, else certifi's). requests itself, reading it all on every call and
    wrapping each in its own objects, cost a millisecond of CPU per Submit, as much as the rest.
    """

    def __init__(self, *, ca_certs: str | None = None) -> None:
        self.ca_certs = ca_certs or _environment_ca_bundle()
        self._options: dict[str, Any] = {"maxsize": 100, "retries": False, "ca_certs": self.ca_certs,
                                         "cert_reqs": "CERT_REQUIRED"}
        self.pool_manager = _watch_pools(PoolManager(**self._options))
        self._managers: dict[tuple[str, str], PoolManager] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        for manager in {self.pool_manager, *self._managers.values()}:
            manager.clear()

    def post(self, url: str, fields: dict[str, str], *, connect_timeout: float, read_timeout: float) -> BaseHTTPResponse:
        """POST ``fields`` form-encoded to ``url``; the response unread (``preload_content=False``)."""
        return self.manager_for(url).request(
            "POST", url, fields=fields, encode_multipart=False, redirect=False, retries=False,
            timeout=Timeout(connect=connect_timeout, read=read_timeout), preload_content=False,
        )

    def manager_for(self, url: str) -> PoolManager:
        """The pools for ``url``: direct, or through the proxy the environment names for its host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        manager = self._managers.get(key)
        if manager is None:
            with self._lock:
                proxy = None if urllib.request.proxy_bypass(key[1]) else urllib.request.getproxies().get(key[0])
                manager = self._managers.setdefault(
                    key, self.pool_manager if not proxy else _watch_pools(ProxyManager(proxy, **self._options)))
        return manager


def _environment_ca_bundle() -> str:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


def new_session() -> Session:
    """A Session of its own (the client's default is shared by the whole process)."""
    return Session()


_session: Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def shared_session() -> Session:
    """One ``new_session`` per process, re-created in a forked child."""
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _session, _session_pid = new_session(), os.getpid()
        return _session
