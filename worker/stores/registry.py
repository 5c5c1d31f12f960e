"""Which accounts the live workers serve, so a producer can refuse what no worker would consume.

A web-app producer holds no ihuyi secrets and so no account list of its own; workers
announce theirs here periodically. An entry expires ``ttl`` seconds after its last
announcement, so a worker that died without withdrawing drops out by itself.

Layout: a sorted set of worker names scored by the Redis time their entry expires, and a
hash of worker name to the JSON list of its accounts. Every call is one round trip.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

import redis

from worker.stores import scripts


class WorkerRegistry:
    """Live workers and the accounts (and so the queues) they consume, pool-wide."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:workers:") -> None:
        self._redis = client
        self._keys = [prefix + "expiries", prefix + "accounts"]
        self._announce = scripts.register(client, "registry_announce")
        self._accounts = scripts.register(client, "registry_accounts")

    def announce(self, worker_name: str, accounts: Iterable[str], ttl: float = 60) -> None:
        """Publish that ``worker_name`` serves exactly ``accounts`` for the next ``ttl`` seconds."""
        if not ttl > 0:
            raise ValueError(f"ttl: must be positive, got {ttl}")
        self._announce(keys=self._keys, args=[worker_name, json.dumps(sorted(set(accounts))), ttl])

    def withdraw(self, worker_name: str) -> None:
        """Remove ``worker_name`` at once, for a worker shutting down."""
        expiries, accounts = self._keys
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(expiries, worker_name).hdel(accounts, worker_name).execute()

    def accounts(self) -> set[str]:
        """Every account some live worker serves."""
        lists = self._accounts(keys=self._keys)
        return {account for listed in lists if listed is not None for account in json.loads(listed)}
