"""Pool-wide per-account rate limit: GCRA with reservation, shared by every worker in Redis.

Each decision is one atomic Lua script on the Redis server's clock (``TIME``), so the
limit holds however many processes and hosts share the account, whatever their clocks say.
The account's state is a single key: its theoretical arrival time (TAT).

With emission interval ``I = period / limit`` and tolerance ``tau = (burst - 1) * I``, a
burst of ``burst`` calls goes at once, then one every ``I``. A caller that accepts to wait
gets a *reserved* slot in the future: callers are queued in the order they asked, and the
wait is known from the same round trip, so waiting is not an error and costs no retry.

A caller that reaches its slot late (a busy worker, a parked task back after its time) uses
it with :meth:`RateLimiter.use_late` and the reservation's ticket, and the GCRA decides that
too (``ratelimit_lib.lua``): the reservation moves to now if nothing was reserved after it,
else a new slot is reserved behind the others. Late callers so never send together faster
than the rate allows.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from config.settings import Rate
from worker.stores import scripts


@dataclass(frozen=True)
class Reservation:
    """The answer of :meth:`RateLimiter.reserve` (and of :meth:`RateLimiter.use_late`).

    ``granted``: a slot is reserved for the caller, who must send after ``wait`` seconds
    (0 = now); ``ticket`` names the reservation, should the caller use it late. Not granted:
    the earliest slot is ``wait`` seconds away, beyond the caller's ``max_wait``, and nothing
    was reserved.
    """

    granted: bool
    wait: float
    ticket: str = ""

    @classmethod
    def of(cls, reply: list[int | bytes]) -> Reservation:
        """A reply of ``rate_reserve`` or ``rate_use_late`` (ratelimit_lib.lua)."""
        granted, wait, ticket = reply
        return cls(bool(granted), float(wait), ticket.decode() if isinstance(ticket, bytes) else ticket)


class RateLimiter:
    """Reserves send slots for accounts, one key per account under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:rate:") -> None:
        self._reserve = scripts.register(client, "ratelimit_reserve")
        self._use_late = scripts.register(client, "ratelimit_use_late")
        self.prefix = prefix

    def reserve(self, account: str, rate: Rate, max_wait: float) -> Reservation:
        """Reserve the account's next slot if it is at most ``max_wait`` seconds away.

        A caller that cannot wait passes ``max_wait=0``; a task passes the time left before
        its code expires, so a slot it is given never lies past its TTL.
        """
        return Reservation.of(self._reserve(keys=[self.key(account)], args=[*self.args(rate), repr(float(max_wait))]))

    def use_late(self, account: str, rate: Rate, ticket: str, max_wait: float) -> Reservation:
        """Use a slot reserved as ``ticket`` ('' if unknown) now that it has passed: granted at
        once while nothing was reserved after it, else a new slot as :meth:`reserve` gives."""
        return Reservation.of(self._use_late(keys=[self.key(account)],
                                             args=[*self.args(rate), ticket, repr(float(max_wait))]))

    def key(self, account: str) -> str:
        """The key of ``account``'s theoretical arrival time."""
        return self.prefix + account

    @staticmethod
    def args(rate: Rate) -> list[str]:
        """``rate`` as the scripts take it: the emission interval and the tolerance, in seconds."""
        interval = rate.period / rate.limit
        return [repr(interval), repr((rate.burst - 1) * interval)]
