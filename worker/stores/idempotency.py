"""One record per ``request_id`` in the shared Redis: deadline, attempts, lease and outcome.

Every decision is one atomic script on the Redis server's clock, so a redelivered or
re-enqueued request, on any worker, sees what the others did:

- ``begin`` when a delivery starts: a finished request answers ``done`` (with its stored
  result), one another attempt holds answers ``busy``, one past its deadline ``expired``;
  otherwise the attempt is counted and leased to the caller under a fresh token.
- ``claim`` right before the Submit: the caller still holds the lease and the code's
  deadline has not passed; the lease is renewed for the whole Submit.
- ``finish`` stores the final result (never over an accepted Submit); ``release`` gives
  the lease back for a retry, only while the caller still holds it.

The lease outlasts the longest possible Submit attempt (the ihuyi client's total
deadline), so a redelivery cannot overlap a live attempt. Given a :class:`Heartbeat`, the
store names the process that holds each lease (worker/stores/heartbeats.py), and a lease
whose holder's heartbeat has expired counts as run out: a dead worker's requests go again
as soon as its messages are back on their queues (seconds), not after the rest of the
lease; a live worker's lease holds as before. The deadline is the time the
request was enqueued (or first seen, for producers that do not say) plus its TTL, so
neither retries nor redeliveries stretch a code's validity. A task parked for a rate-limit
slot leaves its slot in the record, where only the next attempt at this request finds it.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis
from worker.stores import scripts
from worker.stores.heartbeats import KEY_PREFIX as HEARTBEAT_PREFIX
from worker.stores.heartbeats import Heartbeat

KEY_PREFIX = "voicecode:request:"

@dataclass(frozen=True)
class Slot:
    """A rate-limit slot on ``account`` reserved for ``at`` (the Redis server's clock) before the task was parked."""

    account: str
    at: float


@dataclass(frozen=True)
class Attempt:
    """What ``begin`` decided. ``state`` is ``go``, ``done``, ``busy`` or ``expired``."""

    state: str
    now: float = 0.0
    deadline: float = 0.0
    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float | None = None
    result: dict[str, Any] | None = None
    wait: float = 0.0
    token: str = ""
    slot: Slot | None = None


@dataclass(frozen=True)
class Claim:
    """What ``claim`` decided: ``go`` (with ``remaining`` seconds to the deadline), ``expired`` or ``lost``."""

    state: str
    remaining: float = 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class IdempotencyStore:
    """The request records; leases name ``heartbeat``'s process when given (else they only run out)."""

    def __init__(self, client: redis.Redis, *, lease_seconds: float, keep_seconds: int = 86400,
                 heartbeat: Heartbeat | None = None) -> None:
        self._redis = client
        self._heartbeat = heartbeat
        self._begin = scripts.register(client, "idempotency_begin")
        self._claim = scripts.register(client, "idempotency_claim")
        self._release = scripts.register(client, "idempotency_release")
        self._finish = scripts.register(client, "idempotency_finish")
        self.lease_seconds = lease_seconds
        self.keep_seconds = keep_seconds

    def key(self, request_id: str) -> str:
        """The record of ``request_id``."""
        return KEY_PREFIX + request_id

    def begin(self, request_id: str, ttl: int, enqueued_at: float | None = None) -> Attempt:
        args, token = self.begin_args(ttl, enqueued_at)
        return self.attempt_of([_text(r) for r in self._begin(keys=[self.key(request_id)], args=args)], token)

    def begin_args(self, ttl: int, enqueued_at: float | None) -> tuple[list[object], str]:
        """The arguments of ``idempotency_begin`` (idempotency_lib.lua) for a new attempt, and its token."""
        keep = max(self.keep_seconds, ttl)
        token = secrets.token_hex(8)
        # Only a process that leases keeps a heartbeat here: producers and the CLI never do.
        holder = self._heartbeat.keep_on(self._redis) if self._heartbeat else ""
        beat_ms = int(self._heartbeat.ttl * 1000) if self._heartbeat else 0
        return [ttl, "" if enqueued_at is None else repr(float(enqueued_at)), self.lease_seconds, keep, token,
                holder, HEARTBEAT_PREFIX, beat_ms], token

    @staticmethod
    def attempt_of(reply: list[str], token: str) -> Attempt:
        """The :class:`Attempt` a begin's ``reply`` (decoded) stands for; ``token`` is the one it was asked with."""
        state = reply[0]
        if state == "done":
            return Attempt("done", result=json.loads(reply[1]))
        if state == "busy":
            return Attempt("busy", wait=float(reply[1]))
        now, deadline, attempts, first, last = reply[1:6]
        slot_account, slot_at = reply[6:8] if state == "go" and len(reply) >= 8 else ("", "")
        return Attempt(
            state, float(now), float(deadline), int(attempts),
            float(first) if first else None, float(last) if last else None,
            token=token if state == "go" else "",
            slot=Slot(slot_account, float(slot_at)) if slot_account else None,
        )

    def claim(self, request_id: str, attempt: Attempt) -> Claim:
        """Right before a Submit: still ours and not past the deadline? Renews the lease if so."""
        reply = [_text(r) for r in self._claim(keys=[self.key(request_id)],
                                              args=[attempt.token, self.lease_seconds])]
        return Claim(reply[0], float(reply[1]) if reply[0] == "go" else 0.0)

    def finish(self, request_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
        """Store the final result; later ``begin`` calls for this id answer ``done``.

        Returns None, or the stored result of an accepted Submit that ``result`` would have replaced.
        """
        return self.finished(self._finish(keys=[self.key(request_id)], args=self._finish_args(result)))

    def queue_finish(self, pipe: redis.client.Pipeline, request_id: str, result: dict[str, Any]) -> None:
        """:meth:`finish` queued on ``pipe`` (see ``scripts.queue``); its reply goes to :meth:`finished`."""
        scripts.queue(pipe, self._finish, [self.key(request_id)], self._finish_args(result))

    @staticmethod
    def finished(kept: bytes | str | None) -> dict[str, Any] | None:
        """What a finish's reply says: None, or the accepted Submit's result it kept."""
        return None if kept is None else json.loads(kept)

    @staticmethod
    def _finish_args(result: dict[str, Any]) -> list[str]:
        return [result["status"], json.dumps(result)]

    def release(self, request_id: str, attempt: Attempt, *, sent: bool, slot: tuple[str, float] | None = None) -> bool:
        """Give the lease back so a retry may go; False if this attempt no longer held it.

        An attempt that cannot have reached ihuyi (``sent`` False) is not counted; ``slot``
        (account, seconds from now) is left for the parked copy of the task.
        """
        account, seconds = slot or ("", 0.0)
        return bool(self._release(keys=[self.key(request_id)],
                                  args=[attempt.token, "1" if sent else "0", account, repr(float(seconds))]))

    def forget(self, request_id: str) -> None:
        """Drop a finished request's outcome (not its deadline), so a replay may send it."""
        self._redis.hdel(self.key(request_id), "status", "result", "lease", "owner", "holder")
