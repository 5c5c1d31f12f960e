"""How long to wait before retrying a transient failure: exponential backoff with full jitter."""
from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """A delay drawn uniformly from ``[0, min(cap, base * 2**(attempt-1))]`` (AWS's "full jitter").

    Spreading retries over the whole window keeps a pool that failed together from
    retrying together.
    """
    return rng() * min(cap, base * 2 ** max(0, attempt - 1))
