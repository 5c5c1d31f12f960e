"""The per-process objects the tasks use, built once on first use."""
from __future__ import annotations

import functools

from config import get_settings
from worker.deadletters import DeadLetterStore
from worker.idempotency import IdempotencyStore
from worker.sending import Sender
from worker.state import state_redis


@functools.cache
def sender() -> Sender:
    settings = get_settings()
    lease = settings.connect_timeout + settings.read_timeout + 5
    return Sender(settings, IdempotencyStore(state_redis(), lease_seconds=lease), dead_letters())


@functools.cache
def dead_letters() -> DeadLetterStore:
    return DeadLetterStore(state_redis())
