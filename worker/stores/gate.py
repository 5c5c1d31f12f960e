"""The one step before a Submit: every check a send makes, in a single round trip.

``gate.lua`` runs, atomically on the Redis server's clock, what the request's record, the
account's pauses, the number's throttle and the account's rate limit each decide (their
functions shared with those stores' own scripts):

1. begin the attempt (worker/stores/idempotency.py): a finished, busy or expired request
   stops here;
2. the account paused here (for the pool, or on this host)? Its fallback then, if that is
   not; else, or when a pause of this host is due for a probe, the caller takes the slow way,
   one store at a time, where the probe and the hand-back live (worker/sending/flow.py);
3. a parked task back for its slot sends on it, unless it came too late for it;
4. the number's throttle: a refused call is counted nowhere;
5. the account's next slot: none before the code's deadline counts nothing either; one
   further away than the worker holds a thread for is kept in the record and the task parks.

Only the Submit itself is left to the caller, with the lease held for it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis

from config.settings import Account
from worker.stores import scripts
from worker.stores.accounts import AccountStates
from worker.stores.idempotency import Attempt, IdempotencyStore
from worker.stores.ratelimit import RateLimiter
from worker.stores.throttle import MobileThrottle


@dataclass(frozen=True)
class Verdict:
    """What the gate decided.

    ``attempt`` is the begun attempt (its ``state`` ``done``, ``busy`` or ``expired`` ends the
    delivery). For one that goes on, ``verdict`` is ``go`` or ``slot`` (Submit on ``account``
    after ``seconds``), ``park``, ``throttled``, ``late`` or ``paused``: see ``gate.lua``.
    """

    attempt: Attempt
    verdict: str = ""
    account: str = ""
    seconds: float = 0.0


class SendGate:
    """Runs ``gate.lua`` over the other stores' keys, for the ``configured`` accounts."""

    def __init__(self, client: redis.Redis, *, idempotency: IdempotencyStore, accounts: AccountStates,
                 throttle: MobileThrottle, limiter: RateLimiter, configured: Mapping[str, Account]) -> None:
        self._gate = scripts.register(client, "gate")
        self.idempotency = idempotency
        self.accounts = accounts
        self.throttle = throttle
        self.limiter = limiter
        # Per account, what the script takes of it and of its fallback (the account itself if none).
        self._account_args = {
            name: (account.fallback or "", limiter.key(account.fallback or name),
                   [*limiter.args(account.rate), *limiter.args(configured[account.fallback or name].rate)])
            for name, account in configured.items()
        }

    def enter(self, request_id: str, mobile: str, account: str, ttl: int, enqueued_at: float | None, *,
              host: str, probe_every: float, max_hold: float, parked_late: float) -> Verdict:
        """Begin an attempt at ``request_id`` and decide it (see the module's docstring)."""
        fallback, fallback_rate_key, rate_args = self._account_args[account]
        begin_args, token = self.idempotency.begin_args(ttl, enqueued_at)
        log_key, block_key = self.throttle.keys(mobile)
        reply = [r.decode() if isinstance(r, bytes) else r for r in self._gate(
            keys=[self.idempotency.key(request_id), self.accounts.key(account), self.accounts.key(fallback or account),
                  log_key, block_key, self.limiter.key(account), fallback_rate_key],
            args=[*begin_args, account, fallback, f"@{host}", repr(float(probe_every)),
                  self.throttle.member(request_id), repr(float(max_hold)), repr(float(parked_late)),
                  *rate_args, *self.throttle.window_args],
        )]
        if reply[0] in ("done", "busy", "expired"):
            return Verdict(self.idempotency.attempt_of(reply, token))
        verdict, chosen, seconds = reply[:3]
        attempt = self.idempotency.attempt_of(["go", *reply[3:]], token)
        return Verdict(attempt, verdict, chosen, float(seconds))
