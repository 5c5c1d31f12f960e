"""Pool-wide per-account rate limit: GCRA with reservation, shared by every worker in Redis.

Each decision is made on the Redis server's clock (``TIME``) inside the send gate's scripts
(worker/stores/gate.py, running ``ratelimit_lib.lua``), so the limit holds however many
processes and hosts share the account, whatever their clocks say. The account's state is a
single key: its theoretical arrival time (TAT).

With emission interval ``I = period / limit`` and tolerance ``tau = (burst - 1) * I``, a
burst of ``burst`` calls goes at once, then one every ``I``. A caller that accepts to wait
gets a *reserved* slot in the future: callers are queued in the order they asked, and the
wait is known from the same round trip, so waiting is not an error and costs no retry.

A caller that reaches its slot late (a busy worker, a parked task back after its time) uses
it with the reservation's ticket, and the GCRA decides that too: the reservation moves to now
if nothing was reserved after it, else a new slot is reserved behind the others. Late callers
so never send together faster than the rate allows.
"""
from __future__ import annotations

from config.settings import Rate


class RateLimiter:
    """Where each account's rate limit lives, one key per account under ``prefix``, and how the
    gate's scripts are told an account's rate."""

    def __init__(self, prefix: str = "voicecode:rate:") -> None:
        self.prefix = prefix

    def key(self, account: str) -> str:
        """The key of ``account``'s theoretical arrival time."""
        return self.prefix + account

    @staticmethod
    def args(rate: Rate) -> list[str]:
        """``rate`` as the scripts take it: the emission interval and the tolerance, in seconds."""
        interval = rate.period / rate.limit
        return [repr(interval), repr((rate.burst - 1) * interval)]
