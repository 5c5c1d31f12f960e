"""The Redis stores: the state every worker process and host shares, each a class over its Lua scripts.

:class:`Stores` builds them all from the settings, on one client, and is passed to whoever
needs them (the send flow, the tasks, the CLI): nothing here is a module-level singleton.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

from config import Settings
from worker.stores.accounts import AccountStates
from worker.stores.connection import connect_state, resolve_urls
from worker.stores.deadletters import DeadLetterStore
from worker.stores.gate import SendGate
from worker.stores.heartbeats import PROCESS, Heartbeat
from worker.stores.idempotency import IdempotencyStore
from worker.stores.parking import ParkingLot
from worker.stores.ratelimit import RateLimiter
from worker.stores.throttle import MobileThrottle

#: How much longer than the Submit itself an attempt holds its request: a Submit goes without
#: renewing the lease only within worker/sending/timing.py's CLAIM_AFTER_SECONDS of the gate
#: (checked there to stay below this), and this covers that wait plus a margin.
LEASE_MARGIN_SECONDS = 6.0


def lease_seconds(settings: Settings) -> float:
    """How long an attempt holds its request: longer than the longest possible Submit."""
    return settings.connect_timeout + settings.read_timeout + LEASE_MARGIN_SECONDS


@dataclass(frozen=True)
class Stores:
    """Every store, on one client for the shared state Redis."""

    redis: redis.Redis
    idempotency: IdempotencyStore
    dead_letters: DeadLetterStore
    accounts: AccountStates
    throttle: MobileThrottle
    limiter: RateLimiter
    parking: ParkingLot
    gate: SendGate

    @classmethod
    def connect(cls, settings: Settings, heartbeat: Heartbeat | None = None) -> Stores:
        """The stores on the shared state ``settings`` name (the embedded Redis started if that is the one).

        Given a ``heartbeat``, leases name its process, which keeps the heartbeat on that Redis
        from its first lease on, so that a lease dies with its holder (worker/stores/heartbeats.py).
        """
        urls = resolve_urls(settings)
        client = connect_state(urls.state, urls.sentinel_master)
        idempotency = IdempotencyStore(client, lease_seconds=lease_seconds(settings), heartbeat=heartbeat)
        accounts = AccountStates(client)
        throttle = MobileThrottle(client, settings.mobile_throttle)
        limiter = RateLimiter()
        return cls(
            redis=client,
            idempotency=idempotency,
            dead_letters=DeadLetterStore(client),
            accounts=accounts,
            throttle=throttle,
            limiter=limiter,
            parking=ParkingLot(client),
            gate=SendGate(client, idempotency=idempotency, accounts=accounts, throttle=throttle, limiter=limiter,
                          configured=settings.accounts),
        )

    @classmethod
    def for_worker(cls, settings: Settings) -> Stores:
        """The stores of a worker process: its leases name it, and run out when it dies."""
        return cls.connect(settings, heartbeat=PROCESS)
