"""Every decision a send makes, each written once, in Lua, on the Redis server's clock.

``gate.lua`` runs, in one round trip before the Submit, what the request's record, the
account's pauses, the number's throttle and the account's rate limit each decide (their
functions shared with those stores' own scripts by ``--! include``):

1. begin the attempt (worker/stores/idempotency.py): a finished, busy or expired request
   stops here; a request sent by task name that names who asks meets the door's limits
   (worker/stores/guards.py) on its first delivery;
2. the account paused here (for the pool, or on this host)? A pause of this host's old
   enough is probed first, by the one caller that claims it (``probe``: a GetNum, then the
   gate again); else its fallback, if that is not paused; else the send is handed back for
   another host (``hand_back``: a pause of this host only, within the hand-back window) or
   dead-lettered (``paused``). The rules are ``accounts_lib.lua``'s and ``gate_lib.lua``'s;
3. a parked task back for its slot sends on it, unless it came too late for it;
4. the number's throttle: a refused call is counted nowhere;
5. the account's next slot: none before the code's deadline counts nothing either; one
   further away than the worker holds a thread for is kept in the record and the task parks.

Two more scripts decide what a send meets later, the same way:

- ``gate_late.lua``: the worker reached its slot late; the account's GCRA says whether it
  may still go, or when (``ratelimit_lib.lua``'s ``rate_use_late``);
- ``gate_refused.lua``: ihuyi refused this host (its IP, its clock): the account is paused on
  this host, and the send handed back, or not, by the same window as the gate's.

The caller only acts on the answers: it waits, probes, submits, parks, retries or
dead-letters (worker/sending/).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import redis

from config.settings import Account
from worker.stores import scripts
from worker.stores.accounts import AccountStates, Pause, pause_of
from worker.stores.guards import Door
from worker.stores.idempotency import Attempt, IdempotencyStore
from worker.stores.ratelimit import RateLimiter
from worker.stores.throttle import MobileThrottle, window_args

#: What the gate answers for an attempt that goes on (see ``gate.lua``).
GateVerdict = Literal["refused", "go", "slot", "park", "throttled", "late", "probe", "hand_back", "paused"]
#: What ``gate_late.lua`` answers: one of the gate's.
#: What ``gate_refused.lua`` answers.
RefusedVerdict = Literal["hand_back", "dead_letter"]
_VERDICTS: frozenset[str] = frozenset(get_args(GateVerdict))


@dataclass(frozen=True)
class Verdict:
    """What the gate decided.

    ``attempt`` is the begun attempt; ``verdict`` None when it ended there (its ``state`` then
    says how: done, busy, expired). Else ``verdict`` is the gate's, about ``account`` (the
    requested one or its fallback): ``seconds`` to wait, or to the slot, or until the number
    may be called; ``ticket`` the new slot's (``go``); ``pause`` the account's (``probe``,
    ``hand_back``, ``paused``); ``limit`` the door's limit that refused it (``refused``:
    ``requester``, ``range`` or ``budget``).
    """

    attempt: Attempt
    verdict: GateVerdict | None = None
    account: str = ""
    seconds: float = 0.0
    ticket: str = ""
    pause: Pause | None = None
    limit: str = ""


@dataclass(frozen=True)
class Policy:
    """What the sender sets for its sends: ``host`` (its pauses), ``probe_every`` (seconds
    between probes of a host's pause), ``max_hold`` (the longest wait for a slot spent in the
    worker), ``parked_late`` (how late a parked task may use its slot), and the hand-back
    ``window`` after a send's first attempt and ``delay`` before it comes back."""

    host: str
    probe_every: float
    max_hold: float
    parked_late: float
    hand_back_window: float
    hand_back_delay: float

    @cached_property
    def suffix(self) -> str:
        return f"@{self.host}"

    @cached_property
    def hand_back_args(self) -> list[str]:
        return [repr(float(self.hand_back_window)), repr(float(self.hand_back_delay))]


class SendGate:
    """Runs the gate's scripts over the other stores' keys, for the ``configured`` accounts."""

    def __init__(self, client: redis.Redis, *, idempotency: IdempotencyStore, accounts: AccountStates,
                 throttle: MobileThrottle, limiter: RateLimiter, configured: Mapping[str, Account]) -> None:
        self._gate = scripts.register(client, "gate")
        self._late = scripts.register(client, "gate_late")
        self._refused = scripts.register(client, "gate_refused")
        self.idempotency = idempotency
        self.accounts = accounts
        self.throttle = throttle
        self.limiter = limiter
        # Per account, its rate as the scripts take it; and what the gate takes of it and of
        # its fallback (the account itself if none).
        self._rate_args = {name: limiter.args(account.rate) for name, account in configured.items()}
        self._account_args = {
            name: (account.fallback or "", limiter.key(account.fallback or name),
                   [*self._rate_args[name], *self._rate_args[account.fallback or name]])
            for name, account in configured.items()
        }

    def enter(self, request_id: str, mobile: str, account: str, ttl: int, enqueued_at: float | None, *,
              policy: Policy, message: Sequence[str], task_id: str, door: Door | None = None) -> Verdict:
        """Begin an attempt at ``request_id``, whose message is ``message`` (number, code, account),
        and decide it (see the module's docstring). ``door``: the limits of a request sent by
        task name that names who asks, checked and counted if it was not admitted before."""
        fallback, fallback_rate_key, rate_args = self._account_args[account]
        begin_args = self.idempotency.begin_args(ttl, enqueued_at, message=message, task_id=task_id)
        log_key, block_key = self.throttle.keys(mobile)
        keys = [self.idempotency.key(request_id), self.accounts.key(account), self.accounts.key(fallback or account),
                log_key, block_key, self.limiter.key(account), fallback_rate_key,
                self.accounts.probe_key(account, policy.host)]
        tail = [*policy.hand_back_args, *rate_args, len(self.throttle.window_args), *self.throttle.window_args]
        if door is not None:
            tail += [*door.args(), *window_args(door.requester_windows)]

        def run() -> list[object]:
            door_keys = [] if door is None else door.keys(self.idempotency.requester_hash(door))
            return self._gate(keys=[*keys, *door_keys], args=[
                *begin_args(), account, fallback, policy.suffix, repr(float(policy.probe_every)),
                self.throttle.member(request_id), repr(float(policy.max_hold)), repr(float(policy.parked_late)), *tail])

        reply = self.idempotency.fingerprints.run(run)
        if reply[0] not in _VERDICTS:  # begin's own answer: the attempt ends there
            return Verdict(self.idempotency.attempt_of(reply, begin_args.token))
        verdict, chosen, seconds = reply[:3]
        attempt = self.idempotency.attempt_of(["go", *reply[3:8]], begin_args.token)
        return Verdict(attempt, verdict, chosen, float(seconds), reply[8], pause_of(reply[9:13]), reply[13])

    def late(self, request_id: str, attempt: Attempt, account: str, ticket: str, *, policy: Policy) -> Verdict:
        """A slot on ``account`` (reserved as ``ticket``, '' if unknown) reached late: ``go`` after
        ``seconds``, ``park`` or ``late``, as the account's rate limit allows now."""
        verdict, seconds, new_ticket = (r.decode() if isinstance(r, bytes) else r for r in self._late(
            keys=[self.idempotency.key(request_id), self.limiter.key(account)],
            args=[attempt.token, account, ticket, repr(attempt.deadline), repr(float(policy.max_hold)),
                  *self._rate_args[account]],
        ))
        return Verdict(attempt, verdict, account, float(seconds), new_ticket)

    def refused_here(self, request_id: str, attempt: Attempt, account: str, code: int, msg: str, *,
                     policy: Policy) -> RefusedVerdict:
        """ihuyi refused ``policy.host`` on ``account``: pause it there, and hand the send back
        (the lease given back) if the hand-back window allows, else ``dead_letter``."""
        first = attempt.first_attempt if attempt.first_attempt is not None else attempt.now
        reply = self._refused(
            keys=[self.idempotency.key(request_id), self.accounts.key(account)],
            args=[code, msg, policy.suffix, attempt.token, repr(first), repr(attempt.deadline),
                  *policy.hand_back_args],
        )
        return reply.decode() if isinstance(reply, bytes) else reply
