"""A Celery consumer that no message can stop, and that never logs a message's body.

Every message is checked (worker/broker/envelope.py) before Celery's task strategy sees it, and
anything Celery still raises on it is caught: such a message becomes an ``invalid_payload``
dead letter whose record holds only what is safe to show, and is acked so that it never
comes back. Celery's own handlers would log the full body (a mobile number and a code),
and some shapes made it raise in the main loop, which stopped the worker.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from worker.stores.deadletters import DeadLetter
from worker.broker.envelope import check_task_message
from worker.errors import InvalidEnvelope
from worker.sending.masking import mask_digit_runs

log = logging.getLogger(__name__)


def _task_id(message: Any) -> str | None:
    """The message's task id, to name it in the log and the dead letter, masked like a mobile number.

    A foreign producer chooses it, and it could hold a mobile number: its digit runs are masked.
    """
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id = headers.get("id")
    if not isinstance(task_id, str) or len(task_id) > 64 or not task_id.isascii() or not task_id.isprintable():
        return None
    return mask_digit_runs(task_id)


class SafeConsumer(Consumer):
    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        celery_handler = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> None:
            try:
                check_task_message(message.headers, message.decode)
            except InvalidEnvelope as exc:
                self._refuse(message, str(exc))
                return
            try:
                celery_handler(message)
            except self.connection_errors:
                raise  # the consumer reconnects; the message comes back
            except Exception as exc:  # noqa: BLE001 - nothing a message holds may stop the worker
                self._refuse(message, f"task message not accepted ({type(exc).__name__})")

        return on_task_received

    def _refuse(self, message: Any, detail: str) -> None:
        """Dead-letter ``message`` as ``invalid_payload`` and ack it (unless Celery already did)."""
        self._dead_letter(message, detail)
        if not message.acknowledged:
            message.ack()

    def _dead_letter(self, message: Any, detail: str) -> None:
        task_id = _task_id(message)
        log.error("unreadable message %s dead-lettered: %s", task_id or "(no id)", detail)
        try:
            self.app.stores.dead_letters.add(DeadLetter(reason="invalid_payload", account=None, mobile="****",
                                                  attempts=0, task_id=task_id, request_id=None, detail=detail))
        except Exception as exc:  # noqa: BLE001 - the state store down must not stop the worker either
            log.error("dead letter for message %s not stored (%s)", task_id or "(no id)", type(exc).__name__)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._refuse(message, f"cannot decode the message body ({type(exc).__name__})")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, "not a Celery task message")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, f"invalid task message ({type(exc).__name__})")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, "unknown task name (not one of this service's tasks)")
