"""The life of one ``send_voice_code`` request, as plain functions without Celery.

:meth:`Sender.send` takes a validated request and returns what to do next:

- :class:`Done`: a final result (submitted, duplicate, dead_lettered or expired);
- :class:`RetryIn`: a transient failure; try again after so many seconds (``Task.retry``);
- :class:`Park`: the account's rate-limit slot is further away than a thread should wait;
  the task is parked in the shared delay queue and comes back just before its slot.

In order, so that nothing that would refuse a send costs an ihuyi call or a rate-limit slot:
deadline and idempotency, account paused (or its fallback), per-number throttle, pool-wide
per-account rate limit, Submit. All but the Submit are one round trip to the shared state
(worker/stores/gate.py); a paused account whose pause this host must probe, or that has no
fallback to use, takes the slow way, one store at a time. After the Submit, the final result
and the delivery's metrics are written in one more.

What ihuyi refuses is handled by who it is about (ihuyi/codes.py): a number called too often
(4080-4086) is blocked in the throttle and the send ends ``throttled``; the sending host's IP
(400, 4052), or its clock (405 with the dynamic password while this host's clock is more than
a minute from ihuyi's), pauses the account on this host only and hands the send back to the
queue for another host; the account itself (405, 4050, 4051, 408) pauses it pool-wide. What
calls for an alert comes back with the outcome as a :class:`Refusal` (worker/ops/alerts.py
raises it): the code, and the pause when one is in force, whose host it names.

Each delivery also counts, pool-wide: its Submit latencies, its rate-limit waits and, for a
final result, the outcome (worker/stores/metrics.py), in the round trip that stores that
result, or in one of its own.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from config import Account, Settings
from ihuyi import IhuyiClient, PermanentError, Scope, SubmitReply, TransientError
from ihuyi.codes import WRONG_CREDENTIALS, classify
from worker.errors import InvalidPayload
from worker.sending.masking import mask_mobile
from worker.sending.request import VoiceCodeRequest
from worker.sending.retry import RECORD_SUBMITTED, send_backoff
from worker.stores import Stores
from worker.stores.accounts import Pause, probe
from worker.stores.deadletters import DeadLetter
from worker.stores.idempotency import Attempt
from worker.stores.metrics import MetricsStore

#: How often a request another worker is sending is looked at again.
BUSY_POLL_SECONDS = 1.0
#: A rate-limit wait up to this long is spent in the worker thread; a longer one parks the task.
MAX_HOLD_SECONDS = 0.5
#: A Submit about to go later than its slot by more than a quarter of the account's interval
#: (at least MIN_LATE_SECONDS, at most MAX_LATE_SECONDS) gives the slot up and reserves a new
#: one: a parked task that came back late, a thread that woke late on a busy worker. While the
#: way from there to ihuyi takes less than the other three quarters, a window of the rate's
#: period holds at most one Submit over the rate (11 in a second at 10/s), however many are
#: late together. Above 5/s it is MIN_LATE_SECONDS, so a loaded worker's scheduling jitter wastes no slots.
MIN_LATE_SECONDS, MAX_LATE_SECONDS = 0.05, 0.2
#: How late a parked task, back through the mover and the queue, may use the slot it reserved.
PARKED_LATE_SECONDS = 0.2
#: A Submit this soon after the gate goes without a second look at the request's record. Its
#: lease cannot have passed to another worker by then: that takes this process's heartbeat to
#: lapse, after at least 8 s of the whole process standing still (worker/stores/heartbeats.py).
#: The time left before the code's deadline is counted here from the gate's answer.
CLAIM_AFTER_SECONDS = 2.0
#: A send this host cannot make (its account paused here only, no fallback) goes back to the
#: queue after this delay, for another host...
HAND_BACK_DELAY = 0.5
#: ... for this long after its first attempt at most; then it is dead-lettered. One host alone
#: (or every host paused) so dead-letters its sends this much later than a pool-wide pause.
HAND_BACK_SECONDS = 10.0
#: After a 405 with the dynamic password, a clock further than this from ihuyi's is the cause: the dynamic password hashes the worker's own time.
MAX_CLOCK_SKEW_SECONDS = 60.0

#: Dead-letter reasons that are outcomes of their own: the number called too often (by our
#: throttle, or by ihuyi's limits), and nothing sent while the account was paused.
NAMED_REASONS = frozenset({"throttled", "account_paused"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """What a person may need to hear of: ihuyi's ``code`` about ``account`` (``where`` it was
    met), and the ``pause`` it is under, if any: a pause of one host names that host."""

    account: str
    code: int
    where: str
    pause: Pause | None = None


@dataclass(frozen=True)
class Done:
    """A final ``result``. ``store``: still to be written to the request's record, which is
    held on to for ``hold`` seconds while the shared state is unreachable, if it is a Submit."""

    result: dict[str, Any]
    refusal: Refusal | None = None
    store: bool = False
    hold: float = 0.0

    @property
    def status(self) -> str:
        return self.result["status"]


@dataclass(frozen=True)
class RetryIn:
    seconds: float
    reason: str
    refusal: Refusal | None = None


@dataclass(frozen=True)
class Park:
    """Come back in ``seconds``: a Submit slot is reserved for then, kept in the request's record."""

    seconds: float


@dataclass
class Measures:
    """What one delivery measured, (account, seconds) each: written with its outcome in one round trip."""

    submits: list[tuple[str, float]] = field(default_factory=list)
    waits: list[tuple[str, float]] = field(default_factory=list)


def make_result(req: VoiceCodeRequest, status: str, attempts: int, *, code: int | None = None,
                voiceid: str | None = None, account: str | None = None, **extra: Any) -> dict[str, Any]:
    """The task's result: JSON, with the mobile masked and never the verification code."""
    return {
        "status": status,
        "voiceid": voiceid,
        "account": account or req.account,
        "mobile": mask_mobile(req.mobile),
        "attempts": attempts,
        "code": code,
        "request_id": req.request_id,
        **extra,
    }


def outcome_of(result: dict[str, Any]) -> str:
    """A final result's outcome: its ``status``, or for the dead letters nothing was sent for, why."""
    reason = result.get("reason")
    return reason if reason in NAMED_REASONS else str(result.get("status"))


def client_for(settings: Settings, account: Account) -> IhuyiClient:
    return IhuyiClient(
        settings.api_url, account.apiid, account.apikey,
        password_mode=settings.password_mode, reply_format=settings.reply_format,
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
    )


class Sender:
    """Everything one worker process needs to send: settings, the stores and an ihuyi client per
    account. ``settings.host`` is this host, for the pauses about it."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.host = settings.host
        self.redis = stores.redis
        self.idempotency = stores.idempotency
        self.dead_letters = stores.dead_letters
        self.accounts = stores.accounts
        self.throttle = stores.throttle
        self.limiter = stores.limiter
        self.gate = stores.gate
        self.metrics = MetricsStore(stores.redis, accounts=settings.accounts)
        self.clients = {name: client_for(settings, account) for name, account in settings.accounts.items()}
        if settings.api_url.startswith("http://"):
            log.warning("IHUYI_API_URL is plain http://: passwords, numbers and codes cross the network "
                        "unencrypted; use https://")

    def send(self, req: VoiceCodeRequest, *, task_id: str | None, enqueued_at: float | None = None) -> Done | RetryIn | Park:
        """One delivery of ``req``: what to do next (see the module's docstring)."""
        measures = Measures()
        outcome = self._send(req, task_id, enqueued_at, measures)
        if isinstance(outcome, Done) and outcome.store:
            return self._store(req, outcome, measures)
        self._record(measures, outcome.result if isinstance(outcome, Done) else None)
        return outcome

    def _send(self, req: VoiceCodeRequest, task_id: str | None, enqueued_at: float | None,
              measures: Measures) -> Done | RetryIn | Park:
        # A slot is a wait from when it was asked for: a reply read late (a busy worker) does not move it.
        asked = time.monotonic()
        verdict = self.gate.enter(req.request_id, req.mobile, req.account, req.ttl, enqueued_at, host=self.host,
                                  probe_every=self.settings.account_probe_seconds, max_hold=MAX_HOLD_SECONDS,
                                  parked_late=PARKED_LATE_SECONDS)
        attempt, account = verdict.attempt, verdict.account
        if attempt.state == "done":
            stored = attempt.result or {}
            return Done({**stored, "status": "duplicate"} if stored.get("status") == "submitted" else stored)
        if attempt.state == "busy":
            return RetryIn(min(attempt.wait, BUSY_POLL_SECONDS), "another worker holds this request")
        if attempt.state == "expired":
            return self._finish(req, attempt, make_result(req, "expired", attempt.attempts))
        if verdict.verdict == "paused":
            return self._send_while_paused(req, attempt, task_id, measures, gated=asked)
        if verdict.verdict == "throttled":
            return self._throttled(req, attempt, task_id, verdict.seconds)
        if verdict.verdict == "late":
            return self._finish(req, attempt, make_result(req, "expired", attempt.attempts - 1, account=account,
                                                          reason="rate_limited_past_ttl"))
        if verdict.seconds > 0 and verdict.verdict in ("go", "park"):
            measures.waits.append((account, verdict.seconds))
        if verdict.verdict == "park":
            # Back a little early: the re-published task may queue behind others before it runs.
            return Park(verdict.seconds - MAX_HOLD_SECONDS)
        allowance = PARKED_LATE_SECONDS if verdict.verdict == "slot" else self._late_allowance(account)
        return self._send_on_slot(req, attempt, task_id, account, asked + verdict.seconds, allowance, measures,
                                  gated=asked)

    def _send_while_paused(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None,
                           measures: Measures, *, gated: float) -> Done | RetryIn | Park:
        """The slow way, one store at a time: the account to send through (a probe of this host's
        pause, the fallback, or none), then the number's throttle and the account's rate limit.
        A probe may take long: the claim before the Submit counts from the gate (``gated``)."""
        account_or_outcome = self._usable_account(req, attempt, task_id)
        if not isinstance(account_or_outcome, str):
            return account_or_outcome
        account = account_or_outcome
        retry_after = self.throttle.acquire(req.mobile, req.request_id)
        if retry_after > 0:
            return self._throttled(req, attempt, task_id, retry_after)
        at = self._reserve(req, attempt, account, measures)
        if not isinstance(at, float):
            return at
        return self._send_on_slot(req, attempt, task_id, account, at, self._late_allowance(account), measures,
                                  gated=gated)

    def _send_on_slot(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, account: str,
                      at: float, allowance: float, measures: Measures, *, gated: float) -> Done | RetryIn | Park:
        """Wait for the slot at ``at`` (monotonic), then Submit. A slot missed by more than
        ``allowance`` is traded for a new one, to wait for or park until: late sends would burst
        past the account's rate together (the number's throttle was taken). Only once: on a loaded
        worker every thread wakes late, and trading again and again burnt the account's slots
        faster than they were used (a 1,000-task run waited 30 s per retry).

        The request is claimed again first only when its record may have changed since the gate
        (``gated``): a trade, or a wait longer than CLAIM_AFTER_SECONDS."""
        traded = False
        while True:
            time.sleep(max(0.0, at - time.monotonic()))
            if traded or time.monotonic() - at <= allowance:
                break
            at_or_outcome = self._reserve(req, attempt, account, measures)
            if not isinstance(at_or_outcome, float):
                return at_or_outcome
            at, traded = at_or_outcome, True
        remaining = attempt.deadline - attempt.now - (time.monotonic() - gated)
        if traded or time.monotonic() - gated > CLAIM_AFTER_SECONDS:
            claim = self.idempotency.claim(req.request_id, attempt)
            if claim.state == "lost":
                self.throttle.release(req.mobile, req.request_id)
                return RetryIn(BUSY_POLL_SECONDS, "another attempt took this request over")
            remaining = claim.remaining if claim.state == "go" else 0.0
        if remaining <= 0:
            self.throttle.release(req.mobile, req.request_id)
            return self._finish(req, attempt, make_result(req, "expired", attempt.attempts - 1, account=account))
        return self._submit(req, attempt, task_id, account, remaining, measures)

    def _late_allowance(self, account: str) -> float:
        """How late a Submit may use its slot: see MIN_LATE_SECONDS."""
        rate = self.settings.accounts[account].rate
        return min(MAX_LATE_SECONDS, max(MIN_LATE_SECONDS, rate.period / rate.limit / 4))

    def _usable_account(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None) -> str | Done | RetryIn:
        """The account to send through from this host: the requested one, or its fallback while it
        is paused; else the send is handed back for another host (a pause of this host's only) or
        dead-lettered ``account_paused``, either recalling the pause."""
        pause = self.accounts.paused(req.account, self.host)
        if pause is not None and pause.host is not None and self._probed(req.account):
            pause = None
        if pause is None:
            return req.account
        fallback = self.settings.accounts[req.account].fallback
        if fallback is not None and self.accounts.paused(fallback, self.host) is None:
            return fallback
        refusal = Refusal(req.account, pause.code, "(account paused, send turned away)", pause)
        if pause.host is not None and self._may_hand_back(attempt):
            return self._hand_back(req, attempt, refusal)
        where = "" if pause.host is None else f" on host {pause.host}"
        done = self._dead_letter(req, attempt, task_id, "account_paused", pause.code, pause.msg,
                                 f"account {req.account} is paused{where}", submitted=False)
        return Done(done.result, refusal)

    def _probed(self, account: str) -> bool:
        """Whether a GetNum from this host, by one of its processes at most once per
        ``ACCOUNT_PROBE_SECONDS``, just ended the account's pause on this host (its IP registered,
        its clock set right)."""
        return (self.accounts.claim_probe(account, self.host, self.settings.account_probe_seconds)
                and probe(self.accounts, account, self.clients[account].get_num, self.host))

    @staticmethod
    def _may_hand_back(attempt: Attempt) -> bool:
        """Whether a send this host cannot make may still go back to the queue for another host."""
        first = attempt.first_attempt or attempt.now
        return attempt.now - first < HAND_BACK_SECONDS and attempt.now + HAND_BACK_DELAY < attempt.deadline

    def _hand_back(self, req: VoiceCodeRequest, attempt: Attempt, refusal: Refusal) -> RetryIn:
        """Back to the queue, for a host that may send through the refused account; not counted as an attempt."""
        self.idempotency.release(req.request_id, attempt, sent=False)
        return RetryIn(HAND_BACK_DELAY, f"account {refusal.account} is paused on this host ({self.host})", refusal)

    def _throttled(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, retry_after: float) -> Done:
        return self._dead_letter(req, attempt, task_id, "throttled", None, "",
                                 f"number called too often; retry after {retry_after:.0f} s", submitted=False)

    def _reserve(self, req: VoiceCodeRequest, attempt: Attempt, account: str, measures: Measures) -> Done | Park | float:
        """The account's rate limit: the time (monotonic) of a slot at most MAX_HOLD_SECONDS away, to
        wait for in this thread; Park to come back for a later one; Done if none is left in the TTL."""
        asked = time.monotonic()
        reservation = self.limiter.reserve(account, self.settings.accounts[account].rate,
                                           max_wait=attempt.deadline - attempt.now)
        if reservation.granted and reservation.wait > 0:
            measures.waits.append((account, reservation.wait))
        if not reservation.granted:
            self.throttle.release(req.mobile, req.request_id)
            return self._finish(req, attempt, make_result(req, "expired", attempt.attempts - 1, account=account,
                                                          reason="rate_limited_past_ttl"))
        if reservation.wait > MAX_HOLD_SECONDS:
            self.idempotency.release(req.request_id, attempt, sent=False, slot=(account, reservation.wait))
            return Park(reservation.wait - MAX_HOLD_SECONDS)
        return asked + reservation.wait

    def _submit(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, account: str, remaining: float,
                measures: Measures) -> Done | RetryIn:
        """The Submit itself, ``remaining`` seconds before the deadline, and what its outcome calls for."""
        try:
            reply = self._timed_submit(req, account, remaining, measures)
        except TransientError as exc:
            return self._after_transient(req, attempt, exc, task_id)
        except PermanentError as exc:
            return self._after_permanent(req, attempt, task_id, account, exc)
        except Exception as exc:  # noqa: BLE001 - whatever the reply did, the request must end final or retried
            log.error("ihuyi Submit for request %s failed unexpectedly (%s)", req.request_id, type(exc).__name__)
            return self._after_transient(req, attempt, TransientError(f"ihuyi Submit failed ({type(exc).__name__})"),
                                         task_id)
        return self._finish(req, attempt, make_result(req, "submitted", attempt.attempts, code=reply.code,
                                                      voiceid=reply.voiceid, account=account))

    def _timed_submit(self, req: VoiceCodeRequest, account: str, timeout: float, measures: Measures) -> SubmitReply:
        """The Submit call, its duration measured whatever it ends in."""
        started = time.monotonic()
        try:
            return self.clients[account].submit(req.mobile, req.code, timeout=timeout)
        finally:
            measures.submits.append((account, time.monotonic() - started))

    def _after_permanent(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, account: str,
                         exc: PermanentError) -> Done | RetryIn:
        """ihuyi refused: block the number, or pause the account (on this host or the pool), as the code says."""
        self.accounts.record_code(account, exc.code)
        info = classify(exc.code)
        if exc.scope is Scope.NUMBER:
            self.throttle.block(req.mobile, info.retry_after or 0)
            return self._dead_letter(req, attempt, task_id, "throttled", exc.code, exc.msg,
                                     f"ihuyi: {info.meaning}; retry after {info.retry_after} s", account=account)
        skew = self._clock_skew(exc)
        refusal = Refusal(account, exc.code, "on Submit")
        if exc.scope is Scope.HOST or skew is not None:
            pause = Pause(exc.code, exc.msg if skew is None else skew, time.time(), self.host)
            self.accounts.pause(account, pause.code, pause.msg, self.host)
            refusal = Refusal(account, exc.code, "on Submit", pause)
            if self._may_hand_back(attempt):
                return self._hand_back(req, attempt, refusal)
        elif exc.scope is Scope.ACCOUNT:
            self.accounts.pause(account, exc.code, exc.msg)
        done = self._dead_letter(req, attempt, task_id, "permanent", exc.code, exc.msg, account=account)
        return Done(done.result, refusal)

    def _clock_skew(self, exc: PermanentError) -> str | None:
        """After a 405 with the dynamic password, "clock skew on host X by N s" when this host's clock
        is more than a minute from ihuyi's (its reply's Date; the state Redis's TIME without one);
        else None: the APIID or APIKEY is wrong."""
        if exc.code != WRONG_CREDENTIALS or self.settings.password_mode != "dynamic":
            return None
        seconds, micros = self.redis.time()
        now = time.time()
        redis_skew = now - (seconds + micros / 1e6)
        ihuyi = exc.server_time
        # A Date is a whole second, cut down: ihuyi's clock read half a second later, on average.
        skew = redis_skew if ihuyi is None else now - (ihuyi + 0.5)
        if abs(skew) <= MAX_CLOCK_SKEW_SECONDS:
            return None
        against = "the state Redis's clock (ihuyi sent no Date)" if ihuyi is None else "ihuyi's clock"
        return (f"clock skew on host {self.host} by {abs(skew):.0f} s ({'ahead of' if skew > 0 else 'behind'} "
                f"{against}; the state Redis's clock differs by {redis_skew:+.0f} s)")

    def _after_transient(self, req: VoiceCodeRequest, attempt: Attempt, exc: TransientError, task_id: str | None) -> Done | RetryIn:
        if not exc.sent:  # ihuyi cannot have called the person: the number's quota is given back
            self.throttle.release(req.mobile, req.request_id)
        if attempt.attempts >= self.settings.max_attempts:
            return self._dead_letter(req, attempt, task_id, "retries_exhausted", exc.code, exc.msg, str(exc))
        delay = send_backoff(self.settings).delay(attempt.attempts)
        if attempt.now + delay >= attempt.deadline:
            return self._dead_letter(req, attempt, task_id, "expired", exc.code, exc.msg, str(exc), status="expired")
        self.idempotency.release(req.request_id, attempt, sent=True)
        return RetryIn(delay, str(exc))

    def _dead_letter(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, reason: str,
                     code: int | None, msg: str, detail: str = "", *, status: str = "dead_lettered",
                     submitted: bool = True, account: str | None = None) -> Done:
        attempts = attempt.attempts if submitted else attempt.attempts - 1
        letter = DeadLetter(
            reason=reason, account=account or req.account, mobile=mask_mobile(req.mobile), attempts=attempts,
            task_id=task_id, request_id=req.request_id, code=code, msg=msg, detail=detail,
            first_attempt=attempt.first_attempt, last_attempt=attempt.last_attempt,
        )
        replay = {"mobile": req.mobile, "code": req.code, "account": req.account,
                  "request_id": req.request_id, "ttl": req.ttl}
        self.dead_letters.add(letter, replay, payload_expires_at=time.time() + (attempt.deadline - attempt.now))
        return self._finish(req, attempt, make_result(req, status, attempts, code=code, account=account,
                                                      reason=reason, dead_letter=letter.id))

    @staticmethod
    def _finish(req: VoiceCodeRequest, attempt: Attempt, result: dict[str, Any]) -> Done:
        """``result`` final, to be stored (by :meth:`_store`), held on to until the code's deadline."""
        return Done(result, store=True, hold=max(1.0, attempt.deadline - attempt.now))

    def _store(self, req: VoiceCodeRequest, outcome: Done, measures: Measures) -> Done:
        """Write a final result to the request's record, with the delivery's metrics, in one round trip.

        A Submit ihuyi accepted is held on to while the shared state is unreachable: giving up
        would retry the task, and the retry would call the person again once the lease ran
        out. So it keeps trying until the code's deadline: past it, a retry can only answer
        ``expired`` and never Submit again. An accepted Submit already in the record stays: the
        answer is then that, as a duplicate.
        """
        give_up_at = time.monotonic() + outcome.hold
        for retry in itertools.count(1):
            try:
                kept = self._write(req, outcome.result, measures)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if outcome.status != "submitted" or time.monotonic() >= give_up_at:
                    raise
                delay = RECORD_SUBMITTED.delay(retry)
                log.warning("request %s submitted but not recorded yet (%s); trying again in %.1f s",
                            req.request_id, type(exc).__name__, delay)
                time.sleep(delay)
        return Done(outcome.result if kept is None else {**kept, "status": "duplicate"}, outcome.refusal)

    def _write(self, req: VoiceCodeRequest, result: dict[str, Any], measures: Measures) -> dict[str, Any] | None:
        """The finish and the metrics on one pipeline; the accepted Submit the finish kept, if any.

        The metrics count the outcome this delivery reached, also in the rare case that the
        record already held an accepted Submit (an attempt that lost its lease)."""
        pipe = self.metrics.pipeline()
        self.idempotency.queue_finish(pipe, req.request_id, result)
        self._count(pipe, measures, result)
        replies = pipe.execute(raise_on_error=False)
        finished = replies[0]
        if isinstance(finished, redis.exceptions.NoScriptError):  # a restarted Redis: the finish loads it
            return self.idempotency.finish(req.request_id, result)
        if isinstance(finished, Exception):
            raise finished
        if any(isinstance(reply, Exception) for reply in replies[1:]):
            log.warning("metrics of a send not recorded (%s)",
                        next(type(r).__name__ for r in replies[1:] if isinstance(r, Exception)))
        return self.idempotency.finished(finished)

    def reject_invalid(self, mobile: object, error: InvalidPayload, *, task_id: str | None, request_id: object) -> Done:
        """Dead-letter a payload the worker cannot accept (nothing to replay: it would fail again)."""
        rid = request_id if isinstance(request_id, str) and len(request_id) <= 128 else task_id
        detail = str(error)[:200]
        letter = DeadLetter(reason="invalid_payload", account=None, mobile=mask_mobile(mobile), attempts=0,
                            task_id=task_id, request_id=rid, detail=detail)
        self.dead_letters.add(letter)
        done = Done({"status": "dead_lettered", "voiceid": None, "account": None, "mobile": mask_mobile(mobile),
                     "attempts": 0, "code": None, "request_id": rid, "reason": "invalid_payload",
                     "detail": detail, "dead_letter": letter.id})
        self._record(Measures(), done.result)
        return done

    def _record(self, measures: Measures, result: dict[str, Any] | None) -> None:
        """Count a delivery that stores no result, in one round trip: its Submit latencies, its
        rate-limit waits and, for a final ``result``, the outcome. A failure is logged, never raised."""
        if result is None and not (measures.submits or measures.waits):
            return
        try:
            pipe = self.metrics.pipeline()
            self._count(pipe, measures, result)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics of a send not recorded (%s)", type(exc).__name__)

    def _count(self, pipe: redis.client.Pipeline, measures: Measures, result: dict[str, Any] | None) -> None:
        for account, seconds in measures.submits:
            self.metrics.observe_submit(account, seconds, pipe=pipe)
        for account, seconds in measures.waits:
            self.metrics.record_rate_limit_wait(account, seconds, pipe=pipe)
        if result is not None:
            self.metrics.record_outcome(result.get("account") or "", outcome_of(result), result.get("code"), pipe=pipe)
