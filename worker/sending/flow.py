"""The life of one ``send_voice_code`` request, as plain functions without Celery.

:meth:`Sender.send` takes a validated request and returns what to do next:

- :class:`Done`: a final result (submitted, duplicate, dead_lettered or expired);
- :class:`RetryIn`: a transient failure; try again after so many seconds (``Task.retry``);
- :class:`Park`: the account's rate-limit slot is further away than a thread should wait;
  the task is parked in the shared delay queue and comes back just before its slot.

In order, as DESIGN.md §2: deadline and idempotency, account paused (or its fallback),
per-number throttle, pool-wide per-account rate limit, Submit.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from config import Account, Settings
from ihuyi import IhuyiClient, PermanentError, Scope, TransientError
from worker.errors import InvalidPayload
from worker.sending.masking import mask_mobile
from worker.sending.request import VoiceCodeRequest
from worker.sending.retry import RECORD_SUBMITTED, send_backoff
from worker.stores import Stores
from worker.stores.deadletters import DeadLetter
from worker.stores.idempotency import Attempt, Slot

#: How often a request another worker is sending is looked at again.
BUSY_POLL_SECONDS = 1.0
#: A rate-limit wait up to this long is spent in the worker thread; a longer one parks the task.
MAX_HOLD_SECONDS = 0.5
#: A parked task back this much later than its reserved slot reserves a new one. Every slot
#: used this late can land in the same second as the slots that are on time, so at most
#: rate x this many Submits go over the rate in any second (4 at 20/s).
STALE_SLOT_SECONDS = 0.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    result: dict[str, Any]

    @property
    def status(self) -> str:
        return self.result["status"]


@dataclass(frozen=True)
class RetryIn:
    seconds: float
    reason: str


@dataclass(frozen=True)
class Park:
    """Come back in ``seconds``: a Submit slot is reserved for then, kept in the request's record."""

    seconds: float


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


def client_for(settings: Settings, account: Account) -> IhuyiClient:
    return IhuyiClient(
        settings.api_url, account.apiid, account.apikey,
        password_mode=settings.password_mode, reply_format=settings.reply_format,
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
    )


class Sender:
    """Everything one worker process needs to send: settings, the stores and an ihuyi client per account."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.idempotency = stores.idempotency
        self.dead_letters = stores.dead_letters
        self.accounts = stores.accounts
        self.throttle = stores.throttle
        self.limiter = stores.limiter
        self.clients = {name: client_for(settings, account) for name, account in settings.accounts.items()}

    def send(self, req: VoiceCodeRequest, *, task_id: str | None, enqueued_at: float | None = None) -> Done | RetryIn | Park:
        attempt = self.idempotency.begin(req.request_id, req.ttl, enqueued_at)
        if attempt.state == "done":
            stored = attempt.result or {}
            return Done({**stored, "status": "duplicate"} if stored.get("status") == "submitted" else stored)
        if attempt.state == "busy":
            return RetryIn(min(attempt.wait, BUSY_POLL_SECONDS), "another worker holds this request")
        if attempt.state == "expired":
            return self._finish(req, make_result(req, "expired", attempt.attempts))
        slot = attempt.slot
        if slot is None or slot.account not in self.settings.accounts:
            account_or_done = self._usable_account(req, attempt, task_id)
            if isinstance(account_or_done, Done):
                return account_or_done
            account = account_or_done
            gate = self._pass_limits(req, attempt, task_id, account)
            if gate is not None:
                return gate
        elif time.time() - slot.at > STALE_SLOT_SECONDS:
            # The slot went by long ago (the parked task came back late: workers or the state
            # store were down). Sending on it now would burst past the account's rate with every
            # other late task: reserve a fresh slot (the number's throttle was already taken).
            account = slot.account
            gate = self._reserve(req, attempt, account)
            if gate is not None:
                return gate
        else:
            account = slot.account
            time.sleep(min(MAX_HOLD_SECONDS * 2, max(0.0, slot.at - time.time())))
        return self._submit(req, attempt, task_id, account)

    def _usable_account(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None) -> str | Done:
        """The account to send through: the requested one, or its fallback while it is paused."""
        pause = self.accounts.paused(req.account)
        if pause is None:
            return req.account
        fallback = self.settings.accounts[req.account].fallback
        if fallback is not None and self.accounts.paused(fallback) is None:
            return fallback
        return self._dead_letter(req, attempt, task_id, "account_paused", pause.code, pause.msg,
                                 f"account {req.account} is paused", submitted=False)

    def _pass_limits(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, account: str) -> Done | Park | None:
        """Per-number throttle, then the account's rate limit; None means: send now."""
        retry_after = self.throttle.acquire(req.mobile, req.request_id)
        if retry_after > 0:
            return self._dead_letter(req, attempt, task_id, "throttled", None, "",
                                     f"number called too often; retry after {retry_after:.0f} s", submitted=False)
        return self._reserve(req, attempt, account)

    def _reserve(self, req: VoiceCodeRequest, attempt: Attempt, account: str) -> Done | Park | None:
        """The account's rate limit: None to send now, Park to come back for a later slot."""
        reservation = self.limiter.reserve(account, self.settings.accounts[account].rate,
                                           max_wait=attempt.deadline - attempt.now)
        if not reservation.granted:
            self.throttle.release(req.mobile, req.request_id)
            return self._finish(req, make_result(req, "expired", attempt.attempts - 1, account=account,
                                                 reason="rate_limited_past_ttl"))
        if reservation.wait > MAX_HOLD_SECONDS:
            self.idempotency.release(req.request_id, attempt, sent=False,
                                  slot=Slot(account, time.time() + reservation.wait))
            # Back a little early: the re-published task may queue behind others before it runs.
            return Park(reservation.wait - MAX_HOLD_SECONDS)
        time.sleep(reservation.wait)
        return None

    def _submit(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, account: str) -> Done | RetryIn:
        claim = self.idempotency.claim(req.request_id, attempt)
        if claim.state != "go":
            self.throttle.release(req.mobile, req.request_id)
            if claim.state == "lost":
                return RetryIn(BUSY_POLL_SECONDS, "another attempt took this request over")
            return self._finish(req, make_result(req, "expired", attempt.attempts - 1, account=account))
        try:
            reply = self.clients[account].submit(req.mobile, req.code, timeout=claim.remaining)
        except TransientError as exc:
            return self._after_transient(req, attempt, exc, task_id)
        except PermanentError as exc:
            self.accounts.record_code(account, exc.code)
            if exc.scope is Scope.ACCOUNT:
                self.accounts.pause(account, exc.code, exc.msg)
            return self._dead_letter(req, attempt, task_id, "permanent", exc.code, exc.msg, account=account)
        except Exception as exc:  # noqa: BLE001 - whatever the reply did, the request must end final or retried
            log.error("ihuyi Submit for request %s failed unexpectedly (%s)", req.request_id, type(exc).__name__)
            return self._after_transient(req, attempt, TransientError(f"ihuyi Submit failed ({type(exc).__name__})"),
                                         task_id)
        result = make_result(req, "submitted", attempt.attempts, code=reply.code, voiceid=reply.voiceid,
                             account=account)
        return self._finish_submitted(req, result, attempt)

    def _finish_submitted(self, req: VoiceCodeRequest, result: dict[str, Any], attempt: Attempt) -> Done:
        """Record a Submit ihuyi accepted, holding on while the shared state is unreachable.

        Giving up would retry the task, and the retry would call the person again once the
        lease ran out. So keep trying until the code's deadline: past it, a retry can only
        answer ``expired`` and never Submit again.
        """
        give_up_at = time.time() + max(1.0, attempt.deadline - attempt.now)
        for retry in itertools.count(1):
            try:
                return self._finish(req, result)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.time() >= give_up_at:
                    raise
                delay = RECORD_SUBMITTED.delay(retry)
                log.warning("request %s submitted but not recorded yet (%s); trying again in %.1f s",
                            req.request_id, type(exc).__name__, delay)
                time.sleep(delay)

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
        return self._finish(req, make_result(req, status, attempts, code=code, account=account,
                                             reason=reason, dead_letter=letter.id))

    def _finish(self, req: VoiceCodeRequest, result: dict[str, Any]) -> Done:
        accepted = self.idempotency.finish(req.request_id, result)
        return Done(result if accepted is None else {**accepted, "status": "duplicate"})

    def reject_invalid(self, mobile: object, error: InvalidPayload, *, task_id: str | None, request_id: object) -> Done:
        """Dead-letter a payload the worker cannot accept (nothing to replay: it would fail again)."""
        rid = request_id if isinstance(request_id, str) and len(request_id) <= 128 else task_id
        detail = str(error)[:200]
        letter = DeadLetter(reason="invalid_payload", account=None, mobile=mask_mobile(mobile), attempts=0,
                            task_id=task_id, request_id=rid, detail=detail)
        self.dead_letters.add(letter)
        return Done({"status": "dead_lettered", "voiceid": None, "account": None, "mobile": mask_mobile(mobile),
                     "attempts": 0, "code": None, "request_id": rid, "reason": "invalid_payload",
                     "detail": detail, "dead_letter": letter.id})
