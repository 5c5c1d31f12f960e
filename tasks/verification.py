"""Verification: the service picks a code, has it read aloud, and checks what the person types.

Over worker/stores/verifications.py, like Twilio Verify's start and check: the state Redis
keeps an HMAC of the code under an HMAC of the number, keyed with ``VOICECODE_SECRET``. The
plain code exists in this process only while it is enqueued; after that only in the task
message (and, should the send fail, in the dead letter's replay record, which expires with it).

A start is an enqueue, checked the same way and in the same order, and counted against the
number's throttle in the step that reserves it, before the pending verification is replaced:
a start refused as throttled leaves the code the person already heard working, and the guess
budget (``VERIFY_MAX_ATTEMPTS`` per start) is renewed no faster than the throttle allows,
however far behind the workers are. A ``request_id`` makes it idempotent: the same id again answers
the verification it started, with no new code and no second call. What each start answered
is kept under its request id (hashed: it may hold the number) for as long as the id is.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import redis

from worker.errors import InvalidPayload
from worker.sending.request import normalise_code, normalise_mobile
from worker.stores.verifications import CheckResult, VerificationStore, new_code

if TYPE_CHECKING:
    from tasks.producer import Producer

#: How long a start with a request id seen before waits for the start that reserved it to answer.
STARTING_SECONDS = 2.0
CODE_LENGTHS = (4, 5, 6)


@dataclass(frozen=True)
class StartedVerification:
    """A started verification, safe to show and store: the number masked, the code absent.

    ``expires_at`` is Unix time, on the state Redis's clock; ``task_id`` is the send's.
    """

    id: str
    mobile: str
    expires_at: float
    task_id: str
    status: Literal["pending"] = "pending"


class Verifications:
    """Starts verifications through ``producer`` and checks codes against ``store``."""

    def __init__(self, producer: Producer, store: VerificationStore) -> None:
        self._producer = producer
        self._store = store
        self._answers = _StartAnswers(producer.state, producer.keep_seconds)

    def start(self, mobile: object, *, account: object = None, ttl: object = None, length: int = 6,
              request_id: object = None, requester: object = None) -> StartedVerification:
        """See ``tasks.producer.start_verification``."""
        if type(length) is not int or length not in CODE_LENGTHS:
            raise InvalidPayload("length", "must be 4, 5 or 6 digits")
        ticket = self._producer.request(mobile, new_code(length), account, request_id, ttl, requester)
        req = ticket.req
        # The start is one request whatever code it picked: a second start with the id is the same one.
        task_id, new = self._producer.reserve(ticket, asked=("verify", req.mobile, req.account))
        if not new:
            return self._answer_of(req.request_id)
        try:
            verification = self._store.start(req.mobile, req.ttl, req.code)
            started = StartedVerification(verification.id, verification.mobile, verification.expires_at, task_id)
            if request_id is not None:  # a fresh request id is never asked for again
                self._answers.put(req.request_id, started)
            self._store.attach_task(req.mobile, verification.id, task_id)
            self._producer.publish(req, task_id)
        except Exception:
            self._answers.forget(req.request_id)
            self._producer.withdraw(ticket)
            raise
        return started

    def check(self, mobile: object, code: str) -> CheckResult:
        """See ``tasks.producer.check_verification``."""
        number = normalise_mobile(mobile)
        try:
            return self._store.check(number, normalise_code(code))  # type: ignore[arg-type]
        except ValueError:  # not 4 to 6 digits (or not a string): it can never match, and costs no attempt
            raise InvalidPayload("code", "must be a string of 4 to 6 ASCII digits") from None

    def _answer_of(self, request_id: str) -> StartedVerification:
        """What the start that reserved ``request_id`` answered, waiting a moment for one still under way."""
        deadline = time.monotonic() + STARTING_SECONDS
        while (started := self._answers.get(request_id)) is None:
            if time.monotonic() > deadline:
                raise InvalidPayload("request_id", "already used by a start that failed")
            time.sleep(0.02)
        return started


class _StartAnswers:
    """What each start answered, by request id, kept ``keep_seconds``."""

    def __init__(self, client: redis.Redis, keep_seconds: int, prefix: str = "voicecode:verify-started:") -> None:
        self._redis = client
        self._keep_seconds = keep_seconds
        self._prefix = prefix

    def put(self, request_id: str, started: StartedVerification) -> None:
        self._redis.set(self._key(request_id), json.dumps(dataclasses.asdict(started)), ex=self._keep_seconds)

    def get(self, request_id: str) -> StartedVerification | None:
        raw = self._redis.get(self._key(request_id))
        return None if raw is None else StartedVerification(**json.loads(raw))

    def forget(self, request_id: str) -> None:
        self._redis.delete(self._key(request_id))

    def _key(self, request_id: str) -> str:
        return self._prefix + hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:32]
