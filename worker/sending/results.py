"""Where a delivery ends: its final result in the request's record (or a dead letter), and
what it measured, pool-wide (worker/stores/metrics.py), in the round trip that stores the
result, or in one of its own."""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.errors import InvalidPayload
from worker.sending.masking import mask_digit_runs, mask_mobile
from worker.sending.outcomes import Done, make_result, outcome_of
from worker.sending.request import VoiceCodeRequest
from worker.sending.retry import RECORD_SUBMITTED
from worker.stores.connection import TRANSIENT_ERRORS
from worker.stores.deadletters import DeadLetter, DeadLetterStore
from worker.stores.gate import Policy
from worker.stores.idempotency import Attempt, IdempotencyStore, TaskResult
from worker.stores.metrics import Increment, MetricsStore

log = logging.getLogger(__name__)


@dataclass
class Measures:
    """What one delivery measured, (account, seconds) each: written with its outcome in one round trip."""

    submits: list[tuple[str, float]] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """One delivery of ``req`` as the gate began it: its ``attempt``, and ``gated``, the
    monotonic time the gate was asked (a wait counts from there: a reply read late does not
    move a slot)."""

    req: VoiceCodeRequest
    task_id: str | None
    enqueued_at: float | None
    policy: Policy
    measures: Measures
    attempt: Attempt
    gated: float


class ResultStore:
    """Final results and dead letters, with the metrics of the deliveries that reach them."""

    def __init__(self, idempotency: IdempotencyStore, dead_letters: DeadLetterStore, metrics: MetricsStore) -> None:
        self.idempotency = idempotency
        self.dead_letters = dead_letters
        self.metrics = metrics

    @staticmethod
    def finish(d: Delivery, result: dict[str, Any]) -> Done:
        """``result`` final, to be stored (by :meth:`store`), held on to until the code's deadline."""
        return Done(result, store=True, hold=max(1.0, d.attempt.deadline - d.attempt.now))

    def expired(self, d: Delivery, account: str, **extra: Any) -> Done:
        """Nothing sent, and nothing will be before the code's deadline."""
        return self.finish(d, make_result(d.req, "expired", d.attempt.attempts - 1, account=account, **extra))

    def dead_letter(self, d: Delivery, reason: str, code: int | None, msg: str, detail: str = "", *,
                    status: str = "dead_lettered", submitted: bool = True, account: str | None = None) -> Done:
        """A dead letter with what a replay needs, and the result that names it."""
        req, attempt = d.req, d.attempt
        attempts = attempt.attempts if submitted else attempt.attempts - 1
        letter = DeadLetter(
            reason=reason, account=account or req.account, mobile=mask_mobile(req.mobile), attempts=attempts,
            task_id=d.task_id, request_id=mask_digit_runs(req.request_id), code=code, msg=msg, detail=detail,
            first_attempt=attempt.first_attempt, last_attempt=attempt.last_attempt,
        )
        replay = {"mobile": req.mobile, "code": req.code, "account": req.account,
                  "request_id": req.request_id, "ttl": req.ttl}
        self.dead_letters.add(letter, replay, payload_expires_at=time.time() + (attempt.deadline - attempt.now))
        return self.finish(d, make_result(req, status, attempts, code=code, account=account,
                                          reason=reason, dead_letter=letter.id))

    def reject_invalid(self, mobile: object, error: InvalidPayload, *, task_id: str | None,
                       request_id: object) -> Done:
        """Dead-letter a payload the worker cannot accept (nothing to replay: it would fail again)."""
        rid = request_id if isinstance(request_id, str) and len(request_id) <= 128 else task_id
        return self.reject(mobile, "invalid_payload", str(error)[:200], task_id=task_id, request_id=rid)

    def reject(self, mobile: object, reason: str, detail: str, *, task_id: str | None, request_id: str | None,
               account: str | None = None) -> Done:
        """Dead-letter a message that calls nobody, with nothing to replay, and leave the request's record
        alone: ``invalid_payload`` (status ``dead_lettered``) or ``request_id_conflict`` (its own status)."""
        shown_id = None if request_id is None else mask_digit_runs(request_id)
        letter = DeadLetter(reason=reason, account=account, mobile=mask_mobile(mobile), attempts=0,
                            task_id=task_id, request_id=shown_id, detail=detail)
        self.dead_letters.add(letter)
        status = reason if reason == "request_id_conflict" else "dead_lettered"
        done = Done({"status": status, "voiceid": None, "account": account, "mobile": mask_mobile(mobile),
                     "attempts": 0, "code": None, "request_id": shown_id, "reason": reason,
                     "detail": detail, "dead_letter": letter.id})
        self.record(Measures(), done.result)
        return done

    def store(self, req: VoiceCodeRequest, outcome: Done, measures: Measures,
              task_result: TaskResult | None = None) -> Done:
        """Write a final result to the request's record, with the delivery's metrics and, given
        ``task_result``, as the task's Celery result, in one round trip.

        A Submit ihuyi accepted is held on to while the shared state is unreachable: giving up
        would retry the task, and the retry would call the person again once the lease ran
        out. So it keeps trying until the code's deadline: past it, a retry can only answer
        ``expired`` and never Submit again. An accepted Submit already in the record stays: the
        answer is then that, as a duplicate.
        """
        give_up_at = time.monotonic() + outcome.hold
        for retry in itertools.count(1):
            try:
                kept = self._write(req, outcome.result, measures, task_result)
                break
            except TRANSIENT_ERRORS as exc:  # unreachable, or mid-failover (READONLY)
                if outcome.status != "submitted" or time.monotonic() >= give_up_at:
                    raise
                delay = RECORD_SUBMITTED.delay(retry)
                log.warning("request %s submitted but not recorded yet (%s); trying again in %.1f s",
                            mask_digit_runs(req.request_id), type(exc).__name__, delay)
                time.sleep(delay)
        if kept is not None:
            return Done({**kept, "status": "duplicate"}, outcome.refusal)
        return Done(outcome.result, outcome.refusal, task_result_stored=task_result is not None)

    def _write(self, req: VoiceCodeRequest, result: dict[str, Any], measures: Measures,
               task_result: TaskResult | None) -> dict[str, Any] | None:
        """The finish, with the delivery's metrics, in one step; the accepted Submit it kept, if any.

        The metrics count the outcome this delivery reached, also in the rare case that the
        record already held an accepted Submit (an attempt that lost its lease)."""
        finished = self.idempotency.finish(req.request_id, result, task_result, self._counts(measures, result))
        if finished.uncounted:
            log.warning("metrics of a send not recorded (%d counters refused)", finished.uncounted)
        return finished.kept

    def record(self, measures: Measures, result: dict[str, Any] | None) -> None:
        """Count a delivery that stores no result, in one round trip: its Submit latencies, its
        rate-limit waits and, for a final ``result``, the outcome. A failure is logged, never raised."""
        try:
            self.metrics.add(self._counts(measures, result))
        except redis.RedisError as exc:
            log.warning("metrics of a send not recorded (%s)", type(exc).__name__)

    def _counts(self, measures: Measures, result: dict[str, Any] | None) -> list[Increment]:
        counts = [count for account, seconds in measures.submits for count in self.metrics.submit(account, seconds)]
        counts += [count for account, seconds in measures.waits
                   for count in self.metrics.rate_limit_wait(account, seconds)]
        if result is not None:
            counts += self.metrics.outcome(result.get("account") or "", outcome_of(result), result.get("code"))
        return counts
