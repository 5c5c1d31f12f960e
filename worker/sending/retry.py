"""Every retry policy of the service, in one place: how long to wait before trying again.

- :func:`send_backoff`: a Submit failed transiently (network, timeout, HTTP 5xx, code 0):
  ``VOICECODE_RETRY_BASE`` / ``VOICECODE_RETRY_CAP``, full jitter, at most
  ``VOICECODE_MAX_ATTEMPTS`` attempts and never past the code's deadline.
- :data:`STATE_STORE`: the shared state Redis did not answer; the task is retried without
  calling ihuyi (nothing was sent), full jitter.
- :data:`RECORD_SUBMITTED`: ihuyi accepted a Submit but the record could not be written; the
  same thread tries again (no jitter: it is one thread, not a pool retrying together) until
  the code's deadline, since giving up would call the person twice.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from config import Settings


def full_jitter(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """A delay drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]`` (AWS's "full jitter").

    Spreading retries over the whole window keeps a pool that failed together from
    retrying together.
    """
    return rng() * min(cap, base * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff from ``base`` seconds, doubling up to ``cap``; ``jitter`` spreads it over [0, delay]."""

    base: float
    cap: float
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        if self.jitter:
            return full_jitter(attempt, self.base, self.cap)
        return min(self.cap, self.base * 2 ** max(0, attempt - 1))


STATE_STORE = Backoff(0.5, 5.0)
RECORD_SUBMITTED = Backoff(0.2, 5.0, jitter=False)


def send_backoff(settings: Settings) -> Backoff:
    """The backoff between Submit attempts, as configured."""
    return Backoff(settings.retry_base, settings.retry_cap)
