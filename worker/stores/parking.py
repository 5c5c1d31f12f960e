"""A delay queue in Redis for tasks waiting for a rate-limit slot, and the thread that empties it.

A task that must wait longer than a worker should hold it is parked here instead of in
worker memory or as a Celery ETA task (which a worker keeps in memory, and which Redis as
broker redelivers after its visibility timeout). A :class:`Mover` re-publishes each entry
when it comes due.

Entries: a sorted set (entry id -> due time, Redis server clock) and a hash (entry id ->
message JSON), so the sorted set's members stay small. Taking entries leases them: their
due time moves ``lease`` seconds ahead, so an entry whose taker dies before ``done`` comes
due again. Delivery is therefore at least once; the task's idempotency covers a repeat.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import redis
from worker.stores import scripts

log = logging.getLogger(__name__)

def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class Taken(NamedTuple):
    """Entries taken, as ``(entry_id, message)``, and the seconds until the next is due (None: none left)."""

    entries: list[tuple[str, dict[str, Any]]]
    next_due_in: float | None


class ParkingLot:
    """Messages due at a given time, shared by every worker: ``key`` (due times) and ``key:messages``."""

    def __init__(self, client: redis.Redis, key: str = "voicecode:parked") -> None:
        self._redis = client
        self._park = scripts.register(client, "parking_park")
        self._take_due = scripts.register(client, "parking_take_due")
        self._next_due_in = scripts.register(client, "parking_next_due_in")
        self.key = key
        self.messages_key = key + ":messages"
        #: Set by each park from this process: its Mover looks at once, not at its next poll.
        self.parked = threading.Event()

    def park(self, delay: float, message: dict[str, Any]) -> None:
        """Keep the JSON-able ``message`` until ``delay`` seconds from now (Redis server time)."""
        self._park(keys=[self.key, self.messages_key], args=[uuid.uuid4().hex, repr(float(delay)), json.dumps(message)])
        self.parked.set()

    def take_due(self, limit: int = 100, lease: float = 30.0) -> Taken:
        """Lease up to ``limit`` due entries, earliest first, and say when the next one is due.

        A leased entry comes due again ``lease`` seconds from now unless :meth:`done` removes it.
        """
        *reply, next_due = self._take_due(keys=[self.key, self.messages_key], args=[limit, repr(float(lease))])
        entries = [(_text(reply[i]), json.loads(reply[i + 1])) for i in range(0, len(reply), 2)]
        return Taken(entries, float(next_due) if next_due else None)

    def done(self, entry_id: str) -> None:
        """Remove an entry once its message was re-published."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self.key, entry_id)
        pipe.hdel(self.messages_key, entry_id)
        pipe.execute()

    def size(self) -> int:
        """How many entries are parked, leased ones included."""
        return self._redis.zcard(self.key)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest entry is due (0 if overdue); None when the lot is empty."""
        reply = self._next_due_in(keys=[self.key])
        return float(reply) if reply else None


class Mover:
    """A daemon thread that re-publishes due messages by calling ``publish(message)``, then ``done()``.

    It survives failures of ``publish`` and of Redis: it logs a warning (never the message,
    which holds a number and a code) and tries again on the next tick. An entry whose
    publish failed stays leased and comes due again after ``lease`` seconds.

    After a poll that took less than a full batch the thread sleeps until the next entry is
    due, at least ``interval`` and at most ``idle`` seconds, or until this process parks one
    (``ParkingLot.parked``): each process moves its own entries on time, and polls for the
    others' (a process that died) ``idle`` seconds apart, not 20 times a second. A failed
    poll (Redis unreachable) is tried again ``idle`` seconds later: a warning each time.
    """

    def __init__(self, lot: ParkingLot, publish: Callable[[dict], None], interval: float = 0.01,
                 *, idle: float = 0.5, batch: int = 100, lease: float = 30.0) -> None:
        self.lot = lot
        self.publish = publish
        self.interval = interval
        self.idle = idle
        self.batch = batch
        self.lease = lease
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parking-mover", daemon=True)

    def start(self) -> Mover:
        """Start the thread; returns the mover, so ``Mover(...).start()`` reads as one step."""
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        """True while the thread runs (for health checks)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after its current batch and wait up to ``timeout`` seconds."""
        self._stopping.set()
        self.lot.parked.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.lot.parked.clear()
            taken, next_due_in = self._move_batch()
            if taken < self.batch:
                self.lot.parked.wait(self.idle if next_due_in is None else min(self.idle, max(self.interval, next_due_in)))

    def _move_batch(self) -> tuple[int, float | None]:
        """Re-publish one batch of due entries; how many were taken, and when the next is due."""
        try:
            entries, next_due_in = self.lot.take_due(self.batch, self.lease)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
            log.warning("parking lot: taking due entries failed (%s: %s)", type(exc).__name__, exc)
            return 0, None
        for entry_id, message in entries:
            try:
                self.publish(message)
            except Exception as exc:  # noqa: BLE001
                log.warning("parking lot: re-publishing entry %s failed (%s); it comes due again in %g s",
                            entry_id, type(exc).__name__, self.lease)
                continue
            try:
                self.lot.done(entry_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("parking lot: entry %s was re-published but not removed (%s: %s); "
                            "it may be re-published again in %g s", entry_id, type(exc).__name__, exc, self.lease)
        return len(entries), next_due_in
