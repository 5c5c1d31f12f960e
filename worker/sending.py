"""The life of one ``send_voice_code`` request, as plain functions without Celery.

:meth:`Sender.send` takes a validated request and returns either :class:`Done` (a final
result: submitted, duplicate, dead_lettered or expired) or :class:`RetryIn` (try again
after so many seconds). The Celery task turns the second into ``Task.retry``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from config import Account, Settings
from ihuyi import IhuyiClient, PermanentError, TransientError
from worker.backoff import full_jitter
from worker.deadletters import DeadLetter, DeadLetterStore
from worker.idempotency import Attempt, IdempotencyStore
from worker.masking import mask_mobile
from worker.exceptions import InvalidPayload
from worker.payload import VoiceCodeRequest


#: How often a request another worker is sending is looked at again.
BUSY_POLL_SECONDS = 1.0


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
    """Everything one worker process needs to send: settings, clients and shared stores."""

    def __init__(self, settings: Settings, requests_store: IdempotencyStore, dead_letters: DeadLetterStore) -> None:
        self.settings = settings
        self.requests = requests_store
        self.dead_letters = dead_letters
        self.clients = {name: client_for(settings, account) for name, account in settings.accounts.items()}

    def send(self, req: VoiceCodeRequest, *, task_id: str | None, enqueued_at: float | None = None) -> Done | RetryIn:
        attempt = self.requests.begin(req.request_id, req.ttl, enqueued_at)
        if attempt.state == "done":
            stored = attempt.result or {}
            return Done({**stored, "status": "duplicate"} if stored.get("status") == "submitted" else stored)
        if attempt.state == "busy":
            return RetryIn(min(attempt.wait, BUSY_POLL_SECONDS), "another worker holds this request")
        if attempt.state == "expired":
            return self._finish(req, make_result(req, "expired", attempt.attempts))
        try:
            reply = self.clients[req.account].submit(req.mobile, req.code)
        except TransientError as exc:
            return self._after_transient(req, attempt, exc, task_id)
        except PermanentError as exc:
            return self._dead_letter(req, attempt, task_id, "permanent", exc.code, exc.msg)
        return self._finish(req, make_result(req, "submitted", attempt.attempts, code=reply.code, voiceid=reply.voiceid))

    def _after_transient(self, req: VoiceCodeRequest, attempt: Attempt, exc: TransientError, task_id: str | None) -> Done | RetryIn:
        if attempt.attempts >= self.settings.max_attempts:
            return self._dead_letter(req, attempt, task_id, "retries_exhausted", exc.code, exc.msg, str(exc))
        delay = full_jitter(attempt.attempts, self.settings.retry_base, self.settings.retry_cap)
        if attempt.now + delay >= attempt.deadline:
            return self._dead_letter(req, attempt, task_id, "expired", exc.code, exc.msg, str(exc), status="expired")
        self.requests.release(req.request_id)
        return RetryIn(delay, str(exc))

    def _dead_letter(self, req: VoiceCodeRequest, attempt: Attempt, task_id: str | None, reason: str,
                     code: int | None, msg: str, detail: str = "", status: str = "dead_lettered") -> Done:
        letter = DeadLetter(
            reason=reason, account=req.account, mobile=mask_mobile(req.mobile), attempts=attempt.attempts,
            task_id=task_id, request_id=req.request_id, code=code, msg=msg, detail=detail,
            first_attempt=attempt.first_attempt, last_attempt=attempt.last_attempt,
        )
        replay = {"mobile": req.mobile, "code": req.code, "account": req.account,
                  "request_id": req.request_id, "ttl": req.ttl}
        self.dead_letters.add(letter, replay, payload_expires_at=time.time() + (attempt.deadline - attempt.now))
        return self._finish(req, make_result(req, status, attempt.attempts, code=code, reason=reason, dead_letter=letter.id))

    def _finish(self, req: VoiceCodeRequest, result: dict[str, Any]) -> Done:
        self.requests.finish(req.request_id, result)
        return Done(result)

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
