"""The limits a new request meets at the door besides its number's throttle, and what they keep.

Checked and counted in the same atomic step that reserves a request (door_lib.lua, run by
idempotency_reserve.lua), so none can be passed by asking faster than the workers send; a
request sent by task name that names who asks meets them in the send gate's step instead
(worker/stores/gate.lua), on its first delivery:

- **per requester**: the key a web app says is asking (a client address, a user, a session),
  over sliding windows like a number's (``REQUESTER_THROTTLE``); kept under an HMAC of the key;
- **per account and UTC day**: at most the account's ``daily_budget`` requests; the first one
  refused each day is a trip, to alert on;
- **per number range** (the first 7 digits, an operator's segment): at most ``RANGE_GUARD``
  distinct numbers called in its window; the next one trips the guard (an alert) and, with
  ``RANGE_GUARD_BLOCK``, refuses the range's requests for that long.

Trips wait in a sorted set for a worker's beat task to raise them as alerts
(worker/ops/alerts.py); the web app needs no Sentry of its own.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from config.settings import RangeGuard, Window
from worker.stores.throttle import number_hash

PREFIX = "voicecode:guard:"
TRIPS = PREFIX + "trips"
BLOCKED = PREFIX + "blocked"
#: How many digits make a range: the operator's segment of a mainland number.
RANGE_DIGITS = 7


def range_of(mobile: str) -> str:
    """The range ``mobile`` belongs to: its first 7 digits."""
    return mobile[:RANGE_DIGITS]


def shown_range(name: str) -> str:
    """A range as alerts and metrics show it: ``1380013****``."""
    return f"{name}****"


@dataclass(frozen=True)
class Door:
    """One request's part of the door: who asks (None: nobody said), for which account (its
    ``budget``, 0 for none) and number, under which requester windows and range guard."""

    requester: str | None
    account: str
    mobile: str
    requester_windows: Sequence[Window] = ()
    budget: int = 0
    range_guard: RangeGuard | None = None

    def keys(self, requester_hash: str) -> list[str]:
        """door_lib.lua's keys; ``requester_hash`` is the requester's HMAC (the key holds no requester)."""
        rng = range_of(self.mobile)
        return [PREFIX + "requester:" + requester_hash if self.requester is not None else "",
                PREFIX + "budget:" + self.account,
                PREFIX + "range:" + rng, PREFIX + "range:" + rng + ":blocked", PREFIX + "range:" + rng + ":tripped",
                TRIPS, BLOCKED]

    def args(self) -> list[object]:
        """door_lib.lua's limits after the member and the requester's windows: budget to block seconds."""
        guard = self.range_guard
        return [self.budget, self.account, range_of(self.mobile), number_hash(self.mobile), guard.limit if guard else 0,
                guard.seconds if guard else 0, guard.block_seconds if guard else 0]


@dataclass(frozen=True)
class Trip:
    """A limit that tripped: an account's ``budget`` reached (``name`` the account, ``value`` its
    budget), or a ``range`` under attack (``name`` its 7 digits, ``value`` the seconds it is blocked, 0 for none)."""

    kind: Literal["budget", "range"]
    name: str
    value: int
    at: float


class Guards:
    """Reads what the door keeps: trips to alert on, each account's budget use, the blocked ranges."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def take_trips(self) -> list[Trip]:
        """The trips not yet taken, oldest first; each is taken once, pool-wide."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrange(TRIPS, 0, -1, withscores=True)
            pipe.delete(TRIPS)
            entries, _ = pipe.execute()
        trips = []
        for member, at in entries:
            kind, name, value = member.decode().split(":")
            trips.append(Trip(kind, name, int(value), at))  # type: ignore[arg-type]
        return trips

    def budget_use(self, accounts: Iterable[str]) -> dict[str, int]:
        """Requests accepted today (UTC, the Redis server's clock) for each of ``accounts``."""
        names = list(accounts)
        today = self._redis.time()[0] // 86400
        with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(PREFIX + "budget:" + name, "day", "used")
            counted = pipe.execute()
        return {name: int(used) if day is not None and int(day) == today else 0
                for name, (day, used) in zip(names, counted)}

    def blocked_ranges(self) -> dict[str, float]:
        """Each range refused now, with the seconds its block has left."""
        seconds, micros = self._redis.time()
        now = seconds + micros / 1e6
        return {name.decode(): until - now for name, until in self._redis.zrangebyscore(BLOCKED, now, "+inf",
                                                                                           withscores=True)}
