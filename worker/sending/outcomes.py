"""What one delivery of a request ends in, and the result a task returns.

- :class:`Done`: a final result (submitted, duplicate, dead_lettered or expired);
- :class:`RetryIn`: try again after so many seconds (``Task.retry``): a transient failure,
  another worker holding the request, or a send handed back for another host;
- :class:`Park`: the account's rate-limit slot is further away than a thread should wait;
  the task is parked in the shared delay queue and comes back just before its slot.

What calls for an alert comes with the outcome as a :class:`Refusal` (worker/ops/alerts.py
raises it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.sending.masking import mask_digit_runs, mask_mobile
from worker.sending.request import VoiceCodeRequest
from worker.stores.accounts import Pause

#: Dead-letter reasons that are outcomes of their own: the number called too often (by our
#: throttle, or by ihuyi's limits), and nothing sent while the account was paused.
NAMED_REASONS = frozenset({"throttled", "account_paused", "over_budget"})


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
    held on to for ``hold`` seconds while the shared state is unreachable, if it is a Submit.
    ``task_result_stored``: written as the task's Celery result too, so Celery need not."""

    result: dict[str, Any]
    refusal: Refusal | None = None
    store: bool = False
    hold: float = 0.0
    task_result_stored: bool = False

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


Outcome = Done | RetryIn | Park


def handed_back(refusal: Refusal, host: str, seconds: float) -> RetryIn:
    """Back to the queue in ``seconds``, for a host that may send through the refused account."""
    return RetryIn(seconds, f"account {refusal.account} is paused on this host ({host})", refusal)


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
        "request_id": mask_digit_runs(req.request_id),
        **extra,
    }


def outcome_of(result: dict[str, Any]) -> str:
    """A final result's outcome: its ``status``, or for the dead letters nothing was sent for, why."""
    reason = result.get("reason")
    return reason if reason in NAMED_REASONS else str(result.get("status"))
