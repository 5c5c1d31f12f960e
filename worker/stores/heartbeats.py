"""A process's sign of life in Redis, so what a dead worker held is freed within seconds.

A process that takes messages (worker/broker/transport.py) or leases a request
(worker/stores/idempotency.py) keeps the key ``voicecode:heartbeat:<identity>`` on that Redis,
with a TTL of ``TTL_SECONDS``, rewritten every ``BEAT_SECONDS``. While the key exists the
process is alive: its messages and its leases stay its own. Once it has expired (SIGKILL, the
OOM killer, a lost host) the rest of the pool frees them: a live worker puts its messages back
on their queues, and the next attempt at one of its requests need not wait out the lease.

Why a live but slow process keeps its key: a daemon thread of its own writes it, on
connections of its own, and does nothing else. A blocked event loop, busy pool threads, a full
prefetch, a task that runs for minutes, a slow Redis reply to another thread: none of them
stops it, since CPython switches threads at least every 5 ms. Only the whole process standing
still for longer than ``TTL_SECONDS - BEAT_SECONDS`` (8 s) lets the key lapse: SIGSTOP, a VM or
container frozen, a host swapping to a halt, a single C call holding the GIL that long. A
process that comes back from that logs a warning: by then its messages may have been given
to other workers, and a Submit it was making may be made once more, as after a kill. The
expiry is Redis's own, so the clocks of the hosts do not matter.

The key is kept on each Redis the process uses that way (the broker's and the shared state's
may be two servers), so each script checks it where it runs. The identity is
``hostname:pid:random``, made anew in a forked child (a prefork pool's), which keeps a key of
its own. A process has one heartbeat, :data:`PROCESS`, used by worker processes only (the
transport, ``Stores.for_worker``): it stands for the process.
"""
from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "voicecode:heartbeat:"
#: How long a heartbeat lasts unless rewritten: how soon a dead worker's messages and leases
#: are freed (plus the recovery pass's interval), and how long a stalled process may stand still.
TTL_SECONDS = 10.0
#: How often it is rewritten.
BEAT_SECONDS = 2.0


def _server_of(client: redis.Redis) -> tuple[Any, ...]:
    """Which Redis database ``client`` talks to: one key there serves every client of this process."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    # Behind Sentinel the address is the master's name, at whichever server is primary now.
    master = getattr(kwargs.get("connection_pool"), "service_name", None)
    return (pool.connection_class, kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0),
            master)


def _name(client: redis.Redis) -> str:
    """Where ``client`` points, for a log line (never its password)."""
    kwargs = client.connection_pool.connection_kwargs
    master = getattr(kwargs.get("connection_pool"), "service_name", None)
    where = kwargs.get("path") or (f"primary {master}" if master else f"{kwargs.get('host')}:{kwargs.get('port')}")
    return f"redis {where} db {kwargs.get('db', 0)}"


def _own_client(client: redis.Redis, timeout: float) -> redis.Redis:
    """A client to ``client``'s server on a pool of its own, whose calls give up after ``timeout`` seconds."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def _if_alive(ref: weakref.ref[Heartbeat], action: Callable[[Heartbeat], None]) -> None:
    heartbeat = ref()
    if heartbeat is not None:
        action(heartbeat)


class Heartbeat:
    """This process's heartbeat: its identity, and the key saying it is alive on each Redis it uses."""

    def __init__(self, *, ttl: float = TTL_SECONDS, every: float = BEAT_SECONDS) -> None:
        if not 0 < every < ttl:
            raise ValueError(f"every: must be positive and below ttl ({ttl}), got {every}")
        self.ttl = ttl
        self.every = every
        self._reset()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=partial(_if_alive, ref, Heartbeat._reset))
        atexit.register(partial(_if_alive, ref, Heartbeat.stop))

    def _reset(self) -> None:
        """A new identity and no key kept yet: at start, and in a forked child (where only this thread runs)."""
        self._lock = threading.Lock()
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._clients: dict[tuple[Any, ...], redis.Redis] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.identity

    def keep_on(self, client: redis.Redis) -> str:
        """Keep this process's key on ``client``'s Redis from now on; return the identity it names.

        The first call for a Redis writes the key before returning (and raises if that fails),
        so the caller may record the identity there at once; it also starts the thread.
        """
        where = _server_of(client)
        if where not in self._clients:
            with self._lock:
                if where not in self._clients:
                    own = _own_client(client, self.every)
                    self._write(own)
                    self._clients[where] = own
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, args=(self._stopping,),
                                                        name="heartbeat", daemon=True)
                        self._thread.start()
        return self.identity

    def beat(self) -> None:
        """Rewrite the key on every Redis it is kept on; a failure is logged and tried again next beat."""
        for client in list(self._clients.values()):
            try:
                if not self._write(client):
                    log.warning("heartbeat %s had lapsed on %s: this process stood still for over %g s, or "
                                "Redis lost the key; other workers may have taken its messages and leases",
                                self.identity, _name(client), self.ttl - self.every)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                log.warning("heartbeat %s: writing to %s failed (%s: %s)", self.identity, _name(client),
                            type(exc).__name__, exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating and delete the key everywhere, at once: for a process ending cleanly,
        after it gave back what it held (run at exit), so the others need not wait for the TTL."""
        with self._lock:
            self._stopping.set()
            thread, clients = self._thread, list(self._clients.values())
            self._clients, self._thread, self._stopping = {}, None, threading.Event()
        if thread is not None:
            thread.join(timeout)
        for client in clients:
            try:
                client.delete(self.key)
            except redis.RedisError:
                pass  # it expires by itself
            client.close()

    def _write(self, client: redis.Redis) -> bool:
        """Rewrite the key on ``client``; False if it was not there (first write, or lapsed)."""
        ttl_ms = int(self.ttl * 1000)
        if client.set(self.key, 1, px=ttl_ms, xx=True):
            return True
        client.set(self.key, 1, px=ttl_ms)
        return False

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.every):
            self.beat()


#: This process's heartbeat, kept on a Redis once the process takes messages or leases there.
PROCESS = Heartbeat()
