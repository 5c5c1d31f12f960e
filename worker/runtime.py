"""The per-process objects the tasks use, built once on first use."""
from __future__ import annotations

import functools

from config import get_settings
from worker.accounts import AccountStates
from worker.deadletters import DeadLetterStore
from worker.idempotency import IdempotencyStore
from worker.parking import ParkingLot
from worker.ratelimit import RateLimiter
from worker.sending import Sender, lease_seconds
from worker.state import state_redis
from worker.throttle import MobileThrottle


@functools.cache
def sender() -> Sender:
    settings = get_settings()
    return Sender(
        settings,
        IdempotencyStore(state_redis(), lease_seconds=lease_seconds(settings)),
        dead_letters(),
        account_states(),
        throttle(),
        RateLimiter(state_redis()),
    )


@functools.cache
def dead_letters() -> DeadLetterStore:
    return DeadLetterStore(state_redis())


@functools.cache
def account_states() -> AccountStates:
    return AccountStates(state_redis())


@functools.cache
def throttle() -> MobileThrottle:
    return MobileThrottle(state_redis(), get_settings().mobile_throttle)


@functools.cache
def parking_lot() -> ParkingLot:
    return ParkingLot(state_redis())
