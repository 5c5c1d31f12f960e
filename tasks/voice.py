"""``send_voice_code``: thin; the work is in :mod:`worker.sending`."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from celery import Task
from celery.exceptions import Ignore
from celery.worker.request import Request

from config import get_settings
from worker import runtime
from worker.app import app
from worker.exceptions import InvalidPayload
from worker.masking import masked_call
from worker.payload import validate
from worker.reporting import report_outcome
from worker.routing import queue_for
from worker.sending import Park, RetryIn, Slot


def _shape(mobile, code, account=None, request_id=None, ttl=None):  # noqa: ANN001 - the wire signature
    """send_voice_code(mobile, code, account=None, request_id=None, ttl=None)"""


_SIGNATURE = inspect.signature(_shape)


class MaskedRequest(Request):
    """A request whose argsrepr/kwargsrepr are masked whatever the producer sent, for events and logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr, self._kwargsrepr = masked_call(self._args, self._kwargs)


@app.task(name="send_voice_code", bind=True, Request=MaskedRequest, typing=False, max_retries=None)
def send_voice_code(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_voice_code(mobile, code, account=None, request_id=None, ttl=None) -> result JSON."""
    result = _run(self, args, kwargs)
    report_outcome(result)
    return result


def _run(self: Task, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    sender = runtime.sender()
    try:
        bound = _SIGNATURE.bind(*args, **kwargs).arguments
    except TypeError as exc:
        return sender.reject_invalid(
            args[0] if args else kwargs.get("mobile"), InvalidPayload("arguments", str(exc)),
            task_id=self.request.id, request_id=kwargs.get("request_id"),
        ).result
    try:
        req = validate(
            bound["mobile"], bound["code"], bound.get("account"), bound.get("request_id"), bound.get("ttl"),
            accounts=settings.accounts.keys(), default_ttl=settings.code_ttl,
        )
    except InvalidPayload as exc:
        return sender.reject_invalid(bound["mobile"], exc, task_id=self.request.id, request_id=bound.get("request_id")).result
    if not req.request_id:
        req = dataclasses.replace(req, request_id=self.request.id)
    slot = getattr(self.request, "voicecode_slot", None)
    outcome = sender.send(req, task_id=self.request.id, enqueued_at=getattr(self.request, "enqueued_at", None),
                          slot=Slot(**slot) if isinstance(slot, dict) else None)
    if isinstance(outcome, RetryIn):
        raise self.retry(countdown=outcome.seconds, exc=None)
    if isinstance(outcome, Park):
        runtime.parking_lot().park(outcome.seconds, {
            "task_id": self.request.id,
            "args": [req.mobile, req.code],
            "kwargs": {"account": req.account, "request_id": req.request_id, "ttl": req.ttl},
            "headers": {"enqueued_at": getattr(self.request, "enqueued_at", None),
                        "voicecode_slot": {"account": outcome.account, "at": outcome.slot_at}},
            "queue": queue_for(req.account),
        })
        raise Ignore()  # acked, no state stored: the parked copy (same task id) will finish it
    return outcome.result


def republish(message: dict[str, Any]) -> None:
    """Put a parked task back on its queue (called by the parking lot's mover)."""
    argsrepr, kwargsrepr = masked_call(message["args"], message["kwargs"])
    send_voice_code.apply_async(
        message["args"], message["kwargs"], task_id=message["task_id"], headers=message["headers"],
        queue=message["queue"], argsrepr=argsrepr, kwargsrepr=kwargsrepr,
    )
