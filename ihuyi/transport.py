"""The HTTP transport of the ihuyi client: a requests session whose calls end at a total deadline.

Socket timeouts bound the connect and each read, not a call: a server that drips
one byte a second holds the call, and the worker thread making it, for as long as it drips.
Sessions from ``new_session`` are ``requests.Session``s whose ``HTTPAdapter`` takes its
connections from urllib3 pools that register each one, while the thread is inside
``within(deadline)``, with the process's watchdog, which shuts the socket down when the
deadline passes: any send or read blocked on it ends at once. A connection cut that way is
closed, never pooled again.

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
from urllib.parse import urlencode, urlsplit

import certifi
import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse, PoolManager
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


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose pools, direct or through a proxy, hand out watched connections."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, retries=False, **pool_kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        if proxy not in self.proxy_manager:
            proxy_kwargs.setdefault("retries", False)
        return _watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


class _Requests(requests.Session):
    """A requests session that never follows a redirect, nor reads a 3xx's body to prepare one,
    and keeps no cookie: each call stands alone, whichever account it is for."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


class _NoCookies(requests.cookies.RequestsCookieJar):
    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


class Session:
    """The ihuyi client's HTTP: a ``requests.Session`` whose adapter's connections honour
    ``within``, up to 100 per host, that never retries and never follows a redirect (a retried
    Submit may call someone twice: retrying is the caller's decision).

    The session does not read the environment (``trust_env=False``): what requests would read
    on every call is read here once per host, the proxy (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``), and once per session, the CA bundle (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``, else certifi's). Reading it all on every call cost a millisecond of
    CPU per Submit, as much as the rest.
    """

    def __init__(self, *, ca_certs: str | None = None) -> None:
        self.ca_certs = ca_certs or _environment_ca_bundle()
        self.adapter = _WatchedAdapter(pool_connections=10, pool_maxsize=100)
        self.requests = _Requests()
        self.requests.trust_env = False
        self.requests.cookies = _NoCookies()
        self.requests.verify = self.ca_certs
        # As urllib3 asks: the reply as it is, so that max_reply_bytes caps what is read.
        self.requests.headers["Accept-Encoding"] = "identity"
        for prefix in ("http://", "https://"):
            self.requests.mount(prefix, self.adapter)
        self.pool_manager = self.adapter.poolmanager
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        self._requests_for: dict[str, requests.PreparedRequest] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self.requests.close()

    def post(self, url: str, fields: dict[str, str], *, connect_timeout: float, read_timeout: float) -> BaseHTTPResponse:
        """POST ``fields`` form-encoded to ``url``; the response's body unread (requests' ``raw``)."""
        request = self._prepared(url).copy()
        request.prepare_body(urlencode(fields), None)  # as requests encodes a dict, without its type checks
        response = self.requests.send(
            request, timeout=(connect_timeout, read_timeout), allow_redirects=False, stream=True,
            proxies=self._proxies_for(url), verify=self.ca_certs,
        )
        return response.raw

    def _prepared(self, url: str) -> requests.PreparedRequest:
        """A POST to ``url`` with the session's headers, prepared once: each call copies it and
        adds its body (preparing the whole request again cost a third of requests' CPU)."""
        prepared = self._requests_for.get(url)
        if prepared is None:
            prepared = self._requests_for.setdefault(url, self.requests.prepare_request(
                requests.Request("POST", url, headers={"Content-Type": "application/x-www-form-urlencoded"})))
        return prepared

    def manager_for(self, url: str) -> PoolManager:
        """The pools for ``url``: direct, or through the proxy the environment names for its host."""
        proxy = self._proxies_for(url)
        return self.adapter.proxy_manager_for(next(iter(proxy.values()))) if proxy else self.pool_manager

    def _proxies_for(self, url: str) -> dict[str, str]:
        """requests' ``proxies`` for ``url``'s host, from the environment as it was on the host's first call."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        proxies = self._proxies.get(key)
        if proxies is None:
            with self._lock:
                proxy = None if urllib.request.proxy_bypass(key[1]) else urllib.request.getproxies().get(key[0])
                proxies = self._proxies.setdefault(key, {key[0]: proxy} if proxy else {})
        return proxies


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
