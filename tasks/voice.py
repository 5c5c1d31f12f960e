"""``send_voice_code``: thin; the work is in :mod:`worker.sending`."""
from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore
from celery.worker.request import Request

from config import get_settings
from worker import runtime
from worker.alerts import raise_alert
from worker.app import app
from worker.backoff import full_jitter
from worker.exceptions import InvalidPayload
from worker.masking import masked_call
from worker.payload import validate
from worker.reporting import report_outcome
from worker.routing import queue_for
from worker.sending import Park, RetryIn


log = logging.getLogger(__name__)

#: The shared state (Redis) unreachable: retry after full-jitter backoff in [0, min(cap, base * 2**n)].
STATE_RETRY_BASE, STATE_RETRY_CAP = 0.5, 5.0
#: At most one ``state_store_unavailable`` alert per process per this many seconds (the
#: pool-wide dedup lives in the very Redis that is down).
STATE_ALERT_EVERY = 60.0
_state_alert_lock = threading.Lock()
_state_alert_at = [float("-inf")]


def _shape(mobile, code, account=None, request_id=None, ttl=None):  # noqa: ANN001 - the wire signature
    """send_voice_code(mobile, code, account=None, request_id=None, ttl=None)"""


_SIGNATURE = inspect.signature(_shape)


class MaskedRequest(Request):
    """A request whose argsrepr/kwargsrepr are masked whatever the producer sent, for events and logs.

    Its message was checked by worker/consumer.py: args is a list and kwargs an object.
    """

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
    """One delivery; the shared state unreachable is transient: retried with backoff, never failed.

    No Submit is repeated by this: a Redis error before the Submit means nothing was sent,
    and after a successful Submit :meth:`Sender._submit` holds until the record is written.
    """
    try:
        return _deliver(self, args, kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _state_store_alert(exc)
        countdown = full_jitter(self.request.retries + 1, STATE_RETRY_BASE, STATE_RETRY_CAP)
        log.warning("state store unreachable (%s); task %s retried in %.1f s", type(exc).__name__,
                    self.request.id, countdown)
        raise self.retry(countdown=countdown, exc=None, **_masked_reprs(self)) from None


def _state_store_alert(exc: Exception) -> None:
    with _state_alert_lock:
        if time.monotonic() - _state_alert_at[0] < STATE_ALERT_EVERY:
            return
        _state_alert_at[0] = time.monotonic()
    raise_alert("state_store_unavailable", "*", level="error",
                message=f"the shared state Redis (REDIS_URL) is unreachable ({type(exc).__name__}): "
                        "sends are retried until it answers; check the Redis server")


def _deliver(self: Task, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
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
    outcome = sender.send(req, task_id=self.request.id, enqueued_at=getattr(self.request, "enqueued_at", None))
    if isinstance(outcome, RetryIn):
        raise self.retry(countdown=outcome.seconds, exc=None, **_masked_reprs(self))
    if isinstance(outcome, Park):
        runtime.parking_lot().park(outcome.seconds, {
            "task_id": self.request.id,
            "args": [req.mobile, req.code],
            "kwargs": {"account": req.account, "request_id": req.request_id, "ttl": req.ttl},
            "headers": {"enqueued_at": getattr(self.request, "enqueued_at", None)},
            "queue": queue_for(req.account),
        })
        raise Ignore()  # acked, no state stored: the parked copy (same task id) will finish it
    return outcome.result


def _masked_reprs(task: Task) -> dict[str, str]:
    """argsrepr/kwargsrepr for a retry: without them Celery's task-sent event shows the raw arguments."""
    argsrepr, kwargsrepr = masked_call(task.request.args, task.request.kwargs)
    return {"argsrepr": argsrepr, "kwargsrepr": kwargsrepr}


def republish(message: dict[str, Any]) -> None:
    """Put a parked task back on its queue (called by the parking lot's mover)."""
    argsrepr, kwargsrepr = masked_call(message["args"], message["kwargs"])
    send_voice_code.apply_async(
        message["args"], message["kwargs"], task_id=message["task_id"], headers=message["headers"],
        queue=message["queue"], argsrepr=argsrepr, kwargsrepr=kwargsrepr,
    )
