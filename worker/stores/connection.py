"""Where the broker, the result store and the shared state live, and the shared-state client.

The shared state (idempotency keys, dead letters, limiter buckets, paused accounts, the
worker registry, verifications) is one Redis that every worker, producer and host uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from worker.stores import embedded


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


@dataclass(frozen=True)
class Urls:
    broker: str
    result_backend: str
    state: str


def resolve_urls(settings: Places) -> Urls:
    """The three URLs, starting the embedded Redis when no server is configured for broker or state."""
    if settings.embedded:
        sock = embedded.ensure_running(settings.state_dir)
        return Urls(f"redis+socket://{sock}", f"redis+socket://{sock}", f"unix://{sock}")
    state = settings.redis_url
    if state is None and settings.broker_url and settings.broker_url.startswith("redis"):
        state = settings.broker_url
    if state is None:
        sock = embedded.ensure_running(settings.state_dir)
        state = f"unix://{sock}"
    broker = settings.broker_url or state
    backend = settings.result_backend or state.replace("unix://", "redis+socket://", 1)
    return Urls(broker, backend, state)


def connect_state(url: str) -> redis.Redis:
    """A client for the shared state at ``url`` (pooled; redis-py re-pools after a fork)."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
