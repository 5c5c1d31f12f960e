"""Pool-wide per-account rate limit: GCRA with reservation, shared by every worker in Redis.

Each decision is one atomic Lua script on the Redis server's clock (``TIME``), so the
limit holds however many processes and hosts share the account, whatever their clocks say.
The account's state is a single key: its theoretical arrival time (TAT).

With emission interval ``I = period / limit`` and tolerance ``tau = (burst - 1) * I``, a
burst of ``burst`` calls goes at once, then one every ``I``. A caller that accepts to wait
gets a *reserved* slot in the future: callers are queued in the order they asked, and the
wait is known from the same round trip, so waiting is not an error and costs no retry.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from config.settings import Rate
from worker.stores import scripts

@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`RateLimiter.reserve`.

    ``granted``: a slot is reserved for the caller, who must send after ``wait`` seconds
    (0 = now). Not granted: the earliest slot is ``wait`` seconds away, beyond the caller's
    ``max_wait``, and nothing was reserved.
    """

    granted: bool
    wait: float


class RateLimiter:
    """Reserves send slots for accounts, one key per account under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:rate:") -> None:
        self._reserve = scripts.register(client, "ratelimit_reserve")
        self.prefix = prefix

    def reserve(self, account: str, rate: Rate, max_wait: float) -> Reservation:
        """Reserve the account's next slot if it is at most ``max_wait`` seconds away.

        A caller that cannot wait passes ``max_wait=0``; a task passes the time left before
        its code expires, so a slot it is given never lies past its TTL.
        """
        granted, wait = self._reserve(keys=[self.key(account)], args=[*self.args(rate), repr(float(max_wait))])
        return Reservation(bool(granted), float(wait))

    def key(self, account: str) -> str:
        """The key of ``account``'s theoretical arrival time."""
        return self.prefix + account

    @staticmethod
    def args(rate: Rate) -> list[str]:
        """``rate`` as the scripts take it: the emission interval and the tolerance, in seconds."""
        interval = rate.period / rate.limit
        return [repr(interval), repr((rate.burst - 1) * interval)]
