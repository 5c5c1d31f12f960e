"""A Celery consumer that dead-letters the messages it cannot read, and never logs their bodies.

Celery's own handlers log a message it cannot decode, or that is not a task message, with
its full body (a mobile number and a code) and then drop it. Here such a message becomes
an ``invalid_payload`` dead letter whose record holds only what is safe to show, and the
log line names the problem, not the content.
"""
from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from worker.deadletters import DeadLetter

log = logging.getLogger(__name__)


def _task_id(message: Any) -> str | None:
    headers = message.headers if isinstance(message.headers, dict) else {}
    task_id = headers.get("id")
    return task_id if isinstance(task_id, str) and len(task_id) <= 64 else None


class SafeConsumer(Consumer):
    def _dead_letter(self, message: Any, detail: str) -> None:
        from worker import runtime

        task_id = _task_id(message)
        log.error("unreadable message %s dead-lettered: %s", task_id or "(no id)", detail)
        runtime.dead_letters().add(DeadLetter(reason="invalid_payload", account=None, mobile="****",
                                              attempts=0, task_id=task_id, request_id=None, detail=detail))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"cannot decode the message body ({type(exc).__name__})")
        message.ack()

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a Celery task message")
        message.reject_log_error(log, self.connection_errors)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message ({type(exc).__name__})")
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        self._dead_letter(message, f"unknown task {str(name)[:64]!r}")
        message.reject_log_error(log, self.connection_errors)
