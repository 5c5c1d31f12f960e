"""Where the broker, the result store and the shared state live, and the shared-state client.

The shared state (idempotency keys, dead letters, limiter buckets, paused accounts, the
worker registry, verifications) is one Redis that every worker, producer and host uses.

Each Redis role (broker, results, state) is either one server (``redis://``, ``rediss://``,
``unix://``, ``redis+socket://``) or a primary watched by Redis Sentinel, named the way kombu
and Celery name it: ``sentinel://host1:26379;sentinel://host2:26379/0`` (each sentinel, ``;``
between them; the database and the primary's password from the first), with the master name
(``REDIS_SENTINEL_MASTER``) given to kombu and Celery as their ``master_name`` transport option
and to redis-py's own :class:`redis.sentinel.Sentinel` for the state. Clients ask the sentinels
where the primary is at each connect, so after a failover they reconnect to the promoted replica.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
import redis.sentinel
from redis.exceptions import ReadOnlyError

from config.redis_urls import SENTINEL_SCHEME, is_sentinel, sentinel_hosts
from worker.stores import embedded

#: The errors a Redis failover raises while the primary changes: the old primary gone
#: (connection refused or reset, a timeout), the sentinels not agreeing yet (no master found,
#: a subclass of ConnectionError), a client still on a primary that was made a replica
#: (``READONLY``; redis-py's Sentinel connections turn it into a ConnectionError), a replica
#: still loading its data (``LOADING``, a ConnectionError too). Each is transient: retried.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, ReadOnlyError)


class Places(Protocol):
    """What says where things live: the workers' ``Settings`` and the producers' ``ProducerSettings`` both do."""

    @property
    def broker_url(self) -> str | None: ...
    @property
    def result_backend(self) -> str | None: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def embedded(self) -> bool: ...
    @property
    def sentinel_master(self) -> str | None: ...


@dataclass(frozen=True)
class Urls:
    broker: str
    result_backend: str
    state: str
    #: The Sentinel master name of every ``sentinel://`` URL here (REDIS_SENTINEL_MASTER).
    sentinel_master: str | None = None

    @property
    def results_in_state(self) -> bool:
        """True when Celery's results are kept in the state Redis (the default)."""
        return self._is_state(self.result_backend)

    @property
    def broker_in_state(self) -> bool:
        """True when the broker is the state Redis (the default with REDIS_URL alone)."""
        return is_redis(self.broker) and self._is_state(self.broker)

    def _is_state(self, url: str) -> bool:
        # kombu and Celery name the embedded Redis's socket redis+socket://, redis-py unix://.
        return url.replace("redis+socket://", "unix://", 1) == self.state


def is_redis(url: str) -> bool:
    """True for a URL of a Redis server, or of a Redis primary behind Sentinel."""
    return url.startswith(("redis", "rediss", "unix", SENTINEL_SCHEME))


def resolve_urls(settings: Places) -> Urls:
    """The three URLs, starting the embedded Redis when no server is configured for broker or state."""
    if settings.embedded:
        sock = embedded.ensure_running(settings.state_dir)
        return Urls(f"redis+socket://{sock}", f"redis+socket://{sock}", f"unix://{sock}")
    state = settings.redis_url
    if state is None and settings.broker_url and is_redis(settings.broker_url):
        state = settings.broker_url
    if state is None:
        sock = embedded.ensure_running(settings.state_dir)
        state = f"unix://{sock}"
    broker = settings.broker_url or state
    backend = settings.result_backend or state.replace("unix://", "redis+socket://", 1)
    return Urls(broker, backend, state, getattr(settings, "sentinel_master", None))


def connect_state(url: str, sentinel_master: str | None = None) -> redis.Redis:
    """A client for the shared state at ``url`` (pooled; redis-py re-pools after a fork).

    A ``sentinel://`` URL gives a client of the primary named ``sentinel_master``, which it
    finds anew through the sentinels after a failover.
    """
    options = {"socket_timeout": 5, "socket_connect_timeout": 3, "health_check_interval": 30}
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    if not sentinel_master:
        raise ValueError("a sentinel:// URL needs the master name (REDIS_SENTINEL_MASTER)")
    hosts, db, username, password = sentinel_hosts(url)
    sentinels = redis.sentinel.Sentinel(hosts, sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1})
    return sentinels.master_for(sentinel_master, db=db, username=username, password=password, **options)
