"""Idempotent enqueue per ``request_id``: the same request enqueued twice is one task.

The producer reserves a request before publishing it. A request seen before answers its
stored task id and skips the throttle: only new requests count against a number's calls.
A new one is checked against the number's throttle windows (the worker's sliding-window
log, read but not written: the worker records the call when it submits) and, if allowed,
remembered for ``keep_seconds``. Keys hold a hash of the request id, which may contain the number.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from worker.stores import scripts
from worker.stores.throttle import block_key

# Fixed for good: every producer must map a request id to the same task id.
TASK_NAMESPACE = uuid.UUID("3025f6a1-6baa-4d9c-8fa8-1658e62ed0ae")


def task_id_for(request_id: str) -> str:
    """The task id of ``request_id``: a UUID5, the same on every producer and every time."""
    return str(uuid.uuid5(TASK_NAMESPACE, request_id))


@dataclass(frozen=True)
class Reservation:
    """What ``reserve`` decided: ``task_id`` for ``existing`` and ``new``, ``retry_after`` seconds for ``throttled``."""

    status: Literal["existing", "new", "throttled"]
    task_id: str | None = None
    retry_after: float = 0.0


class EnqueueRecords:
    """The request ids enqueued recently, each with its task id, shared by every producer."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:enqueue:") -> None:
        self._redis = client
        self.prefix = prefix
        self._reserve = scripts.register(client, "enqueues_reserve")

    def reserve(
        self,
        request_id: str,
        task_id: str,
        mobile_key: str,
        windows: Sequence[tuple[int, float]],
        keep_seconds: int,
    ) -> Reservation:
        """Reserve ``request_id`` for ``task_id`` unless it was before or the number is throttled.

        ``mobile_key`` is the number's throttle key and ``windows`` its (limit, seconds)
        pairs, as the worker's throttle has them; a block ihuyi set on the number (its
        4080-4086) refuses a new request whatever the windows. Atomic: of producers racing
        with one request id, exactly one gets ``new``.
        """
        status, value = self._reserve(
            keys=[self._key(request_id), mobile_key, block_key(mobile_key)],
            args=[task_id, keep_seconds, *(v for window in windows for v in window)],
        )
        if status == b"throttled":
            return Reservation("throttled", retry_after=float(value))
        return Reservation("existing" if status == b"existing" else "new", task_id=value.decode())

    def forget(self, request_id: str) -> None:
        """Drop the reservation of ``request_id``, for a publish that failed, so it can be enqueued again."""
        self._redis.delete(self._key(request_id))

    def _key(self, request_id: str) -> str:
        return self.prefix + hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:32]
