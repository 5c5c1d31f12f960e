"""Which accounts the workers serve, and the limits they keep, so a producer checks what they would.

A web-app producer holds no ihuyi secrets and so no account list of its own; workers
announce theirs here periodically, with the limits they apply (the number's throttle windows
and the code's TTL), so a producer checks against the same numbers without being told twice.

An account stays *known* for ``KNOWN_SECONDS`` after a worker last announced it, whether or
not a worker is live: while the only worker restarts, its queue holds what is enqueued. A
worker's own entry expires ``ttl`` seconds after its last announcement, so a worker that died
without withdrawing drops out of :meth:`WorkerRegistry.accounts` (the live view) by itself.

Layout: a sorted set of worker names scored by the Redis time their entry expires, a hash of
worker name to the JSON list of its accounts, a sorted set of accounts scored by when they
were last announced, and the last announced limits. Every call is one round trip.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from config.settings import RangeGuard, Settings, Window
from worker.stores import scripts
from worker.stores.guards import Door

#: How long an account no worker announces any more is still accepted (and queued) by producers.
KNOWN_SECONDS = 7 * 86400


@dataclass(frozen=True)
class Limits:
    """What the workers refuse at the door: more calls to a number than ``windows`` allow, more
    requests from one requester than ``requester_windows`` allow, more distinct numbers of one
    range than ``range_guard`` allows, more requests for an account a day than its budget (in
    ``budgets``, only accounts with one); and codes are valid ``code_ttl`` seconds unless a
    request says otherwise."""

    windows: tuple[Window, ...]
    code_ttl: int
    requester_windows: tuple[Window, ...] = ()
    range_guard: RangeGuard | None = None
    budgets: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """The limits ``settings`` (a worker's) keep."""
        return cls(settings.mobile_throttle, settings.code_ttl, settings.requester_throttle, settings.range_guard,
                   {name: a.daily_budget for name, a in settings.accounts.items() if a.daily_budget})

    def door(self, requester: str | None, account: str, mobile: str) -> Door:
        """What a request from ``requester`` (None: nobody said) for ``account`` to ``mobile``
        meets at the door besides its number's throttle (worker/stores/guards.py)."""
        return Door(requester, account, mobile, self.requester_windows, self.budgets.get(account, 0),
                    self.range_guard)

    def to_json(self) -> str:
        guard = self.range_guard
        return json.dumps({"windows": _pairs(self.windows), "code_ttl": self.code_ttl,
                           "requester_windows": _pairs(self.requester_windows),
                           "range_guard": None if guard is None else [guard.limit, guard.seconds, guard.block_seconds],
                           "budgets": dict(self.budgets)})

    @classmethod
    def from_json(cls, text: bytes | str) -> Limits:
        data = json.loads(text)
        guard = data.get("range_guard")
        return cls(_windows(data["windows"]), int(data["code_ttl"]), _windows(data.get("requester_windows", ())),
                   None if guard is None else RangeGuard(*(int(v) for v in guard)),
                   {str(k): int(v) for k, v in data.get("budgets", {}).items()})


def _pairs(windows: Iterable[Window]) -> list[list[int]]:
    return [[w.limit, w.seconds] for w in windows]


def _windows(pairs: Iterable[Iterable[object]]) -> tuple[Window, ...]:
    return tuple(Window(*(int(v) for v in pair)) for pair in pairs)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Announced:
    """What the workers have said: the accounts live workers serve, the accounts known (served
    within ``KNOWN_SECONDS``), and the last limits announced (None before any)."""

    live: frozenset[str]
    known: frozenset[str]
    limits: Limits | None


class WorkerRegistry:
    """Live workers and the accounts (and so the queues) they consume, pool-wide."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:workers:") -> None:
        self._redis = client
        self._keys = [prefix + "expiries", prefix + "accounts", prefix + "known", prefix + "limits"]
        self._announce = scripts.register(client, "registry_announce")
        self._view = scripts.register(client, "registry_accounts")

    def announce(self, worker_name: str, accounts: Iterable[str], ttl: float = 60, limits: Limits | None = None) -> None:
        """Publish that ``worker_name`` serves exactly ``accounts`` for the next ``ttl`` seconds, with ``limits``."""
        if not ttl > 0:
            raise ValueError(f"ttl: must be positive, got {ttl}")
        self._announce(keys=self._keys, args=[worker_name, json.dumps(sorted(set(accounts))), ttl, KNOWN_SECONDS,
                                              "" if limits is None else limits.to_json()])

    def withdraw(self, worker_name: str) -> None:
        """Remove ``worker_name`` from the live workers at once, for a worker shutting down (its accounts stay known)."""
        expiries, accounts = self._keys[:2]
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(expiries, worker_name).hdel(accounts, worker_name).execute()

    def view(self) -> Announced:
        """Everything announced, in one round trip."""
        lists, known, limits = self._view(keys=self._keys, args=[KNOWN_SECONDS])
        live = {account for listed in lists if listed for account in json.loads(listed)}
        return Announced(frozenset(live), frozenset(json.loads(known) or ()), limits and Limits.from_json(limits))

    def accounts(self) -> set[str]:
        """Every account some live worker serves."""
        return set(self.view().live)
