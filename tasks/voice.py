"""``send_voice_code``: thin; the work is in :mod:`worker.sending.flow`.

``send_voice_code.delay(...)`` and ``.apply_async(...)`` from a web app go through the
producer API (tasks/producer.py): validated, reserved and published exactly as
``enqueue_voice_code``, with the same task id and the same errors. Only a worker retrying the
task it runs publishes it again as it is.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any

from celery import Task, signals
from celery.exceptions import Ignore, Retry

from tasks.producer import default_producer
from worker.app import app
from worker.broker.messages import TASK_NAME, parked_message
from worker.broker.transport import acked_by_finish
from worker.celeryconf import MaskedTask
from worker.errors import InvalidPayload
from worker.ops.reporting import report_outcome
from worker.sending.flow import Done, Park, RetryIn
from worker.sending.request import validate, validate_requester
from worker.sending.retry import STATE_STORE
from worker.stores.connection import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

#: At most one ``state_store_unavailable`` alert per process per this many seconds (the
#: pool-wide dedup lives in the very Redis that is down).
STATE_ALERT_EVERY = 60.0


def _shape(mobile, code, account=None, request_id=None, ttl=None, *, requester=None):  # noqa: ANN001 - the wire signature
    """send_voice_code(mobile, code, account=None, request_id=None, ttl=None, *, requester=None)"""


_SIGNATURE = inspect.signature(_shape)


class SendVoiceCode(MaskedTask):
    """The task's publishing side: see the module's docstring."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if self.request.id is not None and options.get("task_id") == self.request.id:
            return self.publish(args, kwargs, **options)  # Task.retry of the running task
        if options:
            raise InvalidPayload("options", f"not supported by send_voice_code: {', '.join(sorted(options))}")
        try:
            bound = _SIGNATURE.bind(*(args or ()), **(kwargs or {})).arguments
        except TypeError as exc:
            raise InvalidPayload("arguments", str(exc)) from None
        return default_producer().enqueue(**bound)

    def retry(self, *args: Any, throw: bool = True, **kwargs: Any) -> Retry:
        """``Task.retry``, without the ``RETRY`` state Celery would store once the retry is already
        on its queue: on a loaded worker the retry can run and store its final result first, which
        ``RETRY`` would then overwrite for good. Flower still sees the retry (its event)."""
        retry = super().retry(*args, throw=False, **kwargs)
        self.request.ignore_result = True  # after the publish, which copies it; read when Celery handles the Retry
        if throw:
            raise retry
        return retry


@app.task(name=TASK_NAME, bind=True, base=SendVoiceCode, typing=False, max_retries=None)
def send_voice_code(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """send_voice_code(mobile, code, account=None, request_id=None, ttl=None, *, requester=None) -> result JSON."""
    result = _run(self, args, kwargs)
    report_outcome(result)
    return result


@signals.worker_ready.connect
def _sender_at_start(sender: Any, **_: Any) -> None:
    """Build the worker's sender when it starts, so what it warns about (a plain http:// ihuyi URL) is said then."""
    sender.app.sender


def _run(self: Task, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One delivery; the shared state unreachable is transient: retried with backoff, never failed.

    No Submit is repeated by this: a Redis error before the Submit means nothing was sent,
    and after a successful Submit :meth:`Sender._submit` holds until the record is written.
    """
    try:
        return _deliver(self, args, kwargs)
    except TRANSIENT_ERRORS as exc:  # unreachable, or mid-failover (READONLY)
        self.app.alerts.raise_from_this_process(
            STATE_ALERT_EVERY, "state_store_unavailable", "*", level="error",
            message=f"the shared state Redis (REDIS_URL) is unreachable ({type(exc).__name__}): "
                    "sends are retried until it answers; check the Redis server")
        countdown = STATE_STORE.delay(self.request.retries + 1)
        log.warning("state store unreachable (%s); task %s retried in %.1f s", type(exc).__name__,
                    self.request.id, countdown)
        raise self.retry(countdown=countdown, exc=None) from None


def _deliver(self: Task, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    settings, sender = self.app.settings, self.app.sender
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
    try:  # by name, naming who asks: the door's limits, in the send's gate
        requester = validate_requester(bound.get("requester"))
    except InvalidPayload as exc:
        return sender.reject_invalid(req.mobile, exc, task_id=self.request.id, request_id=req.request_id).result
    task_result = self.app.task_result(self.request)
    outcome = sender.send(req, task_id=self.request.id, enqueued_at=getattr(self.request, "enqueued_at", None),
                          task_result=task_result, requester=requester)
    if isinstance(outcome, (Done, RetryIn)) and outcome.refusal is not None:
        self.app.alerts.for_refusal(outcome.refusal)
    if isinstance(outcome, RetryIn):
        raise self.retry(countdown=outcome.seconds, exc=None)
    if isinstance(outcome, Park):
        self.app.stores.parking.park(outcome.seconds, parked_message(req, self.request.id,
                                                                     getattr(self.request, "enqueued_at", None)))
        raise Ignore()  # acked, no state stored: the parked copy (same task id) will finish it
    if outcome.task_result_stored:
        self.request.ignore_result = True  # Celery's backend would read and write it again
        if task_result.ack is not None:
            acked_by_finish(task_result.ack[0])
    return outcome.result
