"""The HTTP transport of the ihuyi client: pooled sessions whose calls end at a total deadline.

requests' timeouts bound the connect and each socket read, not a call: a server that drips
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
from contextlib import contextmanager
from typing import Any, Iterator

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
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


class DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections, direct or through a proxy, honour ``within``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return _watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


class Session(requests.Session):
    """A Session that reads the environment's proxy and CA bundle settings once per URL.

    requests reads them on every request, walking the whole environment: about a millisecond
    of CPU per ihuyi call, as much as the rest of the call. A process's environment does not
    change under it; a session whose proxies or CA bundle are set in code reads nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        key = (url, stream, verify, cert)
        if key not in self._environment:
            self._environment[key] = super().merge_environment_settings(url, {}, stream, verify, cert)
        settings = self._environment[key]
        return {**settings, "proxies": dict(settings["proxies"])}


def new_session() -> Session:
    """A Session honouring ``within``: up to 100 connections per host, never retrying by itself.

    Retrying is the caller's decision: a retried Submit may call someone twice.
    """
    session = Session()
    adapter = DeadlineAdapter(pool_maxsize=100, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def shared_session() -> requests.Session:
    """One ``new_session`` per process, re-created in a forked child."""
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _session, _session_pid = new_session(), os.getpid()
        return _session
