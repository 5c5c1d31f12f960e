"""One record per ``request_id`` in the shared Redis: who asked, deadline, attempts, lease and outcome.

Every decision is one atomic script on the Redis server's clock, so a redelivered or
re-enqueued request, on any worker, sees what the others did:

- ``reserve`` at the door, when a producer accepts a new request: the record is made with
  the request's fingerprint and task id, and the call counted against the number's throttle
  (worker/stores/throttle_lib.lua), in one step, so the limits hold however far behind the
  workers are. The same request again answers its task; the same id with another number,
  code or account is a ``conflict``. ``withdraw`` gives a reservation back when its publish failed.
- ``begin`` when a delivery starts: a message whose fingerprint is not the record's answers
  ``conflict`` (it calls nobody); a finished request answers ``done`` (with its stored
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

A request id may hold a number (``login:13900139000``): the record's key holds a hash of it,
and fingerprints are HMACs under a key the pool keeps in the state Redis
(:class:`FingerprintKey`), so neither a number nor a code can be read back from the record.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import redis
from worker.stores import scripts
from worker.stores.guards import Door
from worker.stores.heartbeats import KEY_PREFIX as HEARTBEAT_PREFIX
from worker.stores.heartbeats import Heartbeat
from worker.stores.metrics import Increment
from worker.stores.throttle import window_args

KEY_PREFIX = "voicecode:request:"
#: Where the pool keeps the key of its request fingerprints.
FINGERPRINT_KEY = "voicecode:keys:requests"
# Fixed for good: every producer must map a request id to the same task id.
TASK_NAMESPACE = uuid.UUID("3025f6a1-6baa-4d9c-8fa8-1658e62ed0ae")


def task_id_for(request_id: str) -> str:
    """The task id of ``request_id``: a UUID5, the same on every producer and every time."""
    return str(uuid.uuid5(TASK_NAMESPACE, request_id))


def record_key(request_id: str) -> str:
    """The record of ``request_id``: a SHA-256 prefix of it, since a request id may hold a number."""
    return KEY_PREFIX + hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:32]


class FingerprintKey:
    """The pool's key for request fingerprints, as this process knows it.

    Kept in the state Redis, not in a setting, so producers and workers need nothing more to
    agree on it. Each process starts with a random proposal: the first script that finds no
    key keeps the caller's; a caller whose key is not the kept one is told it (``rekey``),
    adopts it and asks again.
    """

    def __init__(self) -> None:
        self.hex = secrets.token_hex(32)

    def fingerprint(self, *parts: str) -> str:
        """An HMAC of ``parts``, which may hold a number and a code."""
        return hmac.new(self.hex.encode(), "\0".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def adopt(self, kept: bytes | str) -> None:
        self.hex = _text(kept)

    def run(self, script: Callable[[], list[Any]]) -> list[str]:
        """``script()``'s decoded reply, called again once with the pool's key if it answered ``rekey``."""
        reply = [_text(r) for r in script()]
        if reply[:1] == ["rekey"]:
            self.adopt(reply[1])
            reply = [_text(r) for r in script()]
        return reply


@dataclass(frozen=True)
class Slot:
    """A rate-limit slot on ``account`` reserved for ``at`` (the Redis server's clock) before the task was parked."""

    account: str
    at: float


AttemptState = Literal["go", "done", "busy", "expired", "conflict"]


@dataclass(frozen=True)
class Reservation:
    """What ``reserve`` decided: the request's ``task_id`` for ``new`` and ``existing``;
    ``retry_after`` seconds for ``throttled`` by which ``limit`` (``number``, ``requester`` or
    ``range``); the account's ``budget`` for ``over_budget``; ``conflict``: the id is another request's."""

    status: Literal["new", "existing", "throttled", "over_budget", "conflict"]
    task_id: str = ""
    retry_after: float = 0.0
    limit: Literal["", "number", "requester", "range"] = ""
    budget: int = 0


@dataclass(frozen=True)
class Attempt:
    """What ``begin`` decided (see the module's docstring)."""

    state: AttemptState
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

    state: Literal["go", "expired", "lost"]
    remaining: float = 0.0


def _reservation(reply: list[str]) -> Reservation:
    """What a reserve's ``reply`` (decoded) says."""
    status = reply[0]
    if status == "throttled":
        return Reservation("throttled", retry_after=float(reply[1]), limit=reply[2])  # type: ignore[arg-type]
    if status == "over_budget":
        return Reservation("over_budget", budget=int(reply[1]))
    if status == "conflict":
        return Reservation("conflict")
    return Reservation(status, task_id=reply[1])  # type: ignore[arg-type]


@dataclass(frozen=True)
class TaskResult:
    """Where a task's result goes in Celery's Redis result backend, when that backend is the
    state Redis: ``key`` as the backend names it, kept ``expires`` seconds. The finish then
    stores the result there, in its own step, in the shape the backend reads back
    (``AsyncResult.get``, Flower), and publishes it to a waiting caller as the backend does:
    the worker's send needs no round trips of Celery's own for it.

    When the broker is the state Redis too, ``ack`` is the message's delivery tag with the
    keys its ack drops it from (worker/broker/transport.py's ``ack_keys``): the finish acks
    it in the same step, and the ack Celery makes after the task is then kombu's in-memory part."""

    key: str
    task_id: str
    expires: int
    ack: tuple[str, list[str]] | None = None

    def meta(self, result: dict[str, Any]) -> str:
        """``result`` as Celery's backend stores a successful task's."""
        return json.dumps({"status": "SUCCESS", "result": result, "traceback": None, "children": [],
                           "date_done": datetime.now(timezone.utc).isoformat(), "task_id": self.task_id})


@dataclass(frozen=True)
class Finished:
    """What a finish did: ``kept``, the accepted Submit's result it kept in place of the new
    one (None when it stored the new one); ``uncounted``, the counters it could not add to."""

    kept: dict[str, Any] | None
    uncounted: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class IdempotencyStore:
    """The request records; leases name ``heartbeat``'s process when given (else they only run out)."""

    def __init__(self, client: redis.Redis, *, lease_seconds: float, keep_seconds: int = 86400,
                 heartbeat: Heartbeat | None = None) -> None:
        self._redis = client
        self._heartbeat = heartbeat
        self.fingerprints = FingerprintKey()
        self._reserve = scripts.register(client, "idempotency_reserve")
        self._begin = scripts.register(client, "idempotency_begin")
        self._claim = scripts.register(client, "idempotency_claim")
        self._release = scripts.register(client, "idempotency_release")
        self._finish = scripts.register(client, "idempotency_finish")
        self._withdraw = scripts.register(client, "idempotency_withdraw")
        self.lease_seconds = lease_seconds
        self.keep_seconds = keep_seconds

    @staticmethod
    def key(request_id: str) -> str:
        """The record of ``request_id``."""
        return record_key(request_id)

    def reserve(self, request_id: str, task_id: str, asked: Sequence[str], message: Sequence[str], *,
                throttle: tuple[str, str, str], windows: Sequence[str], door: Door | None = None) -> Reservation:
        """Accept a new request at the door: its record made and counted against every limit, atomically.

        ``asked`` is what identifies the request as the caller asked for it (for a send its
        number, code and account), ``message`` what the worker will see of it; ``throttle`` the
        number's log and block keys and this request's member there, ``windows`` the throttle's
        (limit, seconds, ...); ``door`` the request's other limits (worker/stores/guards.py). Of
        producers racing with one request id, exactly one gets ``new``.
        """
        log_key, block_key, member = throttle
        door = door or Door(None, "", "")
        requester_windows = window_args(door.requester_windows)

        def run() -> list[Any]:
            requester = self.requester_hash(door)
            return self._reserve(
                keys=[self.key(request_id), FINGERPRINT_KEY, log_key, block_key, *door.keys(requester)],
                args=[self.fingerprints.hex, self.fingerprints.fingerprint(*asked),
                      self.fingerprints.fingerprint(*message), task_id, self.keep_seconds, member,
                      *door.args(), len(windows), *windows, *requester_windows])

        return _reservation(self.fingerprints.run(run))

    def requester_hash(self, door: Door) -> str:
        """The HMAC ``door``'s requester is kept under ('' for none): the store never holds a requester."""
        return "" if door.requester is None else self.fingerprints.fingerprint("requester", door.requester)

    def withdraw(self, request_id: str, *, throttle: tuple[str, str], door: Door | None = None) -> None:
        """Give back a reservation whose publish failed: the record dropped and its call taken back
        from every limit that counts calls (``throttle``: the number's log key and this request's
        member; ``door`` as given to :meth:`reserve`), so the request can be asked again."""
        log_key, member = throttle
        door = door or Door(None, "", "")
        requester_log, budget_key = door.keys(self.requester_hash(door))[:2]
        self._withdraw(keys=[self.key(request_id), log_key, requester_log, budget_key], args=[member, door.budget])

    def begin(self, request_id: str, ttl: int, enqueued_at: float | None = None, *,
              message: Sequence[str] = (), task_id: str = "") -> Attempt:
        """Begin an attempt at the request whose message is ``message`` (number, code, account)."""
        args = self.begin_args(ttl, enqueued_at, message=message, task_id=task_id)
        reply = self.fingerprints.run(lambda: self._begin(keys=[self.key(request_id)], args=args()))
        return self.attempt_of(reply, args.token)

    def begin_args(self, ttl: int, enqueued_at: float | None, *, message: Sequence[str],
                   task_id: str) -> BeginArgs:
        """The arguments of ``idempotency_begin`` (idempotency_lib.lua) for a new attempt, with its token."""
        # Only a process that leases keeps a heartbeat here: producers and the CLI never do.
        holder = self._heartbeat.keep_on(self._redis) if self._heartbeat else ""
        beat_ms = int(self._heartbeat.ttl * 1000) if self._heartbeat else 0
        return BeginArgs(self.fingerprints, secrets.token_hex(8), [
            ttl, "" if enqueued_at is None else repr(float(enqueued_at)), self.lease_seconds,
            max(self.keep_seconds, ttl)], [holder, HEARTBEAT_PREFIX, beat_ms, FINGERPRINT_KEY], message, task_id)

    @staticmethod
    def attempt_of(reply: list[str], token: str) -> Attempt:
        """The :class:`Attempt` a begin's ``reply`` (decoded) stands for; ``token`` is the one it was asked with."""
        state = reply[0]
        if state == "conflict":
            return Attempt("conflict")
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

    def finish(self, request_id: str, result: dict[str, Any], task_result: TaskResult | None = None,
               counts: Sequence[Increment] = ()) -> Finished:
        """Store the final result, in one step with what the delivery ``counts`` (metrics
        counters); later ``begin`` calls for this id answer ``done``. With ``task_result``, the
        same step stores it as the task's Celery result too.

        An accepted Submit that ``result`` would replace is kept, and then no Celery result is
        stored: the reply names it.
        """
        keys, args = [self.key(request_id)], [result["status"], json.dumps(result), len(counts)]
        for key, name, by in counts:
            keys.append(key)
            args += [name, by]
        if task_result is not None:
            keys.append(task_result.key)
            args += [task_result.meta(result), task_result.expires]
            if task_result.ack is not None:
                tag, ack_keys = task_result.ack
                keys += ack_keys
                args.append(tag)
        kept, skipped = self._finish(keys=keys, args=args)
        return Finished(None if kept is None else json.loads(kept), skipped)

    def release(self, request_id: str, attempt: Attempt, *, sent: bool, slot: tuple[str, float] | None = None) -> bool:
        """Give the lease back so a retry may go; False if this attempt no longer held it.

        An attempt that cannot have reached ihuyi (``sent`` False) is not counted; ``slot``
        (account, seconds from now) is left for the parked copy of the task.
        """
        account, seconds = slot or ("", 0.0)
        return bool(self._release(keys=[self.key(request_id)],
                                  args=[attempt.token, "1" if sent else "0", account, repr(float(seconds))]))

    def reopen(self, request_id: str, task_id: str) -> None:
        """Drop a finished request's outcome (not its deadline, nor its count against the number),
        so a replay may send it as the task ``task_id``."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.key(request_id), "status", "result", "lease", "owner", "holder")
            pipe.hset(self.key(request_id), "task_id", task_id)
            pipe.execute()


@dataclass(frozen=True)
class BeginArgs:
    """The arguments of one ``idempotency_begin``, made anew by calling it (the fingerprint
    key may change between a ``rekey`` and the call again)."""

    fingerprints: FingerprintKey
    token: str
    head: list[object]
    tail: list[object]
    message: Sequence[str]
    task_id: str

    def __call__(self) -> list[object]:
        return [*self.head, self.token, *self.tail, self.fingerprints.hex,
                self.fingerprints.fingerprint(*self.message), self.task_id]
