"""The stores' Lua rules one at a time, for their tests.

The service runs each rule only inside the scripts that combine them (the door's reserve, the
send gate). The scripts here run one rule of a ``*_lib.lua`` alone on the stores' own keys,
and the classes add them to the store whose keys they use, so a rule's edge cases are tested
without the rest of the gate around them.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import redis

from config.settings import Rate, Window
from worker.stores import scripts
from worker.stores.accounts import AccountStates
from worker.stores.ratelimit import RateLimiter
from worker.stores.throttle import MobileThrottle

_HERE = Path(__file__).parent


@dataclass(frozen=True)
class Reservation:
    """``rate_reserve``'s or ``rate_use_late``'s answer (ratelimit_lib.lua): ``granted``, a slot
    after ``wait`` seconds named ``ticket``; not granted, the earliest slot is ``wait`` away."""

    granted: bool
    wait: float
    ticket: str = ""

    @classmethod
    def of(cls, reply: list[int | bytes]) -> Reservation:
        granted, wait, ticket = reply
        return cls(bool(granted), float(wait), ticket.decode() if isinstance(ticket, bytes) else ticket)


class RuleLimiter(RateLimiter):
    """The rate limiter with ratelimit_lib.lua's two rules: reserve a slot, use one late."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:rate:") -> None:
        super().__init__(prefix)
        self._reserve = scripts.register(client, "ratelimit_reserve", _HERE)
        self._use_late = scripts.register(client, "ratelimit_use_late", _HERE)

    def reserve(self, account: str, rate: Rate, max_wait: float) -> Reservation:
        """The account's next slot if it is at most ``max_wait`` seconds away."""
        return Reservation.of(self._reserve(keys=[self.key(account)], args=[*self.args(rate), repr(float(max_wait))]))

    def use_late(self, account: str, rate: Rate, ticket: str, max_wait: float) -> Reservation:
        """A slot reserved as ``ticket`` ('' if unknown) used now that it has passed."""
        return Reservation.of(self._use_late(keys=[self.key(account)],
                                             args=[*self.args(rate), ticket, repr(float(max_wait))]))


class RuleThrottle(MobileThrottle):
    """The number's throttle with throttle_lib.lua's rules: how long to wait, and counting a call."""

    def __init__(self, client: redis.Redis, windows: list[Window] | tuple[Window, ...],
                 prefix: str = "voicecode:throttle:") -> None:
        super().__init__(client, windows, prefix)
        self._check = scripts.register(client, "throttle_check", _HERE)

    def retry_after(self, mobile: str) -> float:
        """Seconds until a call to ``mobile`` would be allowed (0.0: now), a block included. Records nothing."""
        return self._run(mobile, record=False)

    def acquire(self, mobile: str, request_id: str | None = None) -> float:
        """Record a call to ``mobile`` (once per ``request_id``) and return 0.0 if every window
        allows it now; else record nothing and return the seconds to wait."""
        return self._run(mobile, record=True, member=self.member(request_id))

    def _run(self, mobile: str, *, record: bool, member: str = "") -> float:
        reply = self._check(keys=list(self.keys(mobile)),
                            args=["1" if record else "0", member or secrets.token_hex(8), *self.window_args])
        return float(reply)


class RuleAccounts(AccountStates):
    """The account states with accounts_lib.lua's claim of a host's probe."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:account:") -> None:
        super().__init__(client, prefix)
        self._claim_probe = scripts.register(client, "accounts_claim_probe", _HERE)

    def claim_probe(self, account: str, host: str, every: float) -> bool:
        """True for one caller per ``every`` seconds once ``host``'s pause of ``account`` is that old."""
        return bool(self._claim_probe(keys=[self.key(account), self.probe_key(account, host)],
                                      args=[f"@{host}", repr(float(every))]))
